/* The C tests' harness: see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char *bin;
static char scratch[] = "/tmp/keyseat-c-test.XXXXXX";

double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) == -1 && errno == EINTR) {
  }
}

const char *keyseat_bin(void) { return bin; }

int harness_init(void) {
  const char *given = getenv("KEYSEAT_BIN");
  if (!given || access(given, X_OK) != 0)
    FAIL("set KEYSEAT_BIN to the keyseat server binary");
  bin = strdup(given);
  for (int again = 1; again;) {
    again = 0;
    for (char **e = environ; *e; e++) {
      if (strncmp(*e, "KEYSEAT_", 8) == 0) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
        unsetenv(name);
        again = 1;
        break;
      }
    }
  }
  if (!mkdtemp(scratch)) FAIL("mkdtemp: %s", strerror(errno));
  return 0;
}

void harness_done(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch);
  free(bin);
  bin = NULL;
}

static int read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
  return (int)n;
}

int server_start(server *s, int port) {
  char listen[32], interval[16], timeout[16];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  snprintf(interval, sizeof interval, "%d", s->interval);
  snprintf(timeout, sizeof timeout, "%d", s->timeout);
  char *argv[] = {bin, "serve", "--listen", listen, "--database", s->db,
                  "--heartbeat-interval-seconds", interval,
                  "--session-timeout-seconds", timeout, "--rate-limits",
                  "off", NULL};
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_addopen(&io, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&io, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&io, 2, s->log,
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int rc = posix_spawn(&s->pid, bin, &io, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&io);
  if (rc != 0) FAIL("cannot run %s: %s", bin, strerror(rc));
  static char log[65536];
  const char *tag = "listening on http://127.0.0.1:";
  for (double deadline = now_ms() + 20000; now_ms() < deadline;
       sleep_ms(20)) {
    int status;
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
      s->pid = 0;
      read_file(s->log, log, sizeof log);
      FAIL("keyseat serve exited (status %d):\n%s", status, log);
    }
    if (read_file(s->log, log, sizeof log) < 0) continue;
    const char *at = strstr(log, tag);
    if (at && strchr(at, '\n')) {
      s->port = atoi(at + strlen(tag));
      snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
      return 0;
    }
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
  FAIL("keyseat serve did not get ready in 20 s:\n%s", log);
}

int server_stop(server *s) {
  if (s->pid <= 0) return 0;
  kill(s->pid, SIGTERM);
  for (double deadline = now_ms() + 10000; now_ms() < deadline;
       sleep_ms(10)) {
    if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
      s->pid = 0;
      return 0;
    }
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
  FAIL("keyseat serve did not stop within 10 s of SIGTERM");
}

int server_new(server *s, const char *name, int interval, int timeout) {
  memset(s, 0, sizeof *s);
  snprintf(s->dir, sizeof s->dir, "%s/%s", scratch, name);
  if (mkdir(s->dir, 0700) != 0) FAIL("mkdir %s: %s", s->dir, strerror(errno));
  snprintf(s->db, sizeof s->db, "%s/k.db", s->dir);
  snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
  s->interval = interval;
  s->timeout = timeout;
  return server_start(s, 0);
}

int keyseat_cli(server *s, const char *args, char *out, size_t len) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' --database '%s' %s 2>&1", bin, s->db, args);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t n = fread(out, 1, len - 1, p);
  out[n] = '\0';
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int make_key(server *s, const char *policy, char *key, size_t len) {
  char args[128], out[4096];
  snprintf(args, sizeof args,
           "keys create --json --label c-test --on-conflict %s", policy);
  int rc = keyseat_cli(s, args, out, sizeof out);
  const char *tag = "\"access_key\":\"";
  const char *at = strstr(out, tag);
  if (rc != 0 || !at) FAIL("keys create failed (%d):\n%s", rc, out);
  at += strlen(tag);
  size_t k = strcspn(at, "\"");
  if (k + 1 > len) FAIL("key too long");
  memcpy(key, at, k);
  key[k] = '\0';
  return 0;
}

void told_init(told *t) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
}

void told_destroy(told *t) {
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
}

void on_lost(void *user_data, keyseat_lost_reason reason,
             const char *other_device, const char *message) {
  told *t = user_data;
  double at = now_ms();
  keyseat_status ended = KEYSEAT_OK;
  if (t->end_from_callback) ended = keyseat_client_end(t->end_from_callback, NULL);
  pthread_mutex_lock(&t->mu);
  t->calls++;
  t->reason = reason;
  t->other_was_null = other_device == NULL;
  snprintf(t->other, sizeof t->other, "%s", other_device ? other_device : "");
  snprintf(t->message, sizeof t->message, "%s", message);
  t->at_ms = at;
  t->thread = pthread_self();
  t->end_status = ended;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

int told_wait(told *t, int ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&t->mu);
  while (t->calls == 0 &&
         pthread_cond_timedwait(&t->cv, &t->mu, &until) != ETIMEDOUT) {
  }
  int calls = t->calls;
  pthread_mutex_unlock(&t->mu);
  return calls;
}

keyseat_state state_of(keyseat_client *c, keyseat_lost_reason *why) {
  keyseat_state s = KEYSEAT_STATE_NOT_STARTED;
  if (keyseat_client_state(c, &s, why) != KEYSEAT_OK) return (keyseat_state)-1;
  return s;
}

keyseat_options options(const char *device_name) {
  keyseat_options o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.device_name = device_name;
  o.timeout_ms = 2000;
  return o;
}
