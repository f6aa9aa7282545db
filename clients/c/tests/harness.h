/*
 * What the C tests need besides keyseat.h: checks, a real `keyseat serve`
 * process (port 0, a temp database, short intervals; restartable on the
 * same port), the keyseat command line, and a recorder for the lost
 * callback. No mock of the server anywhere.
 */
#ifndef KEYSEAT_TEST_HARNESS_H
#define KEYSEAT_TEST_HARNESS_H

#include "keyseat.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- checks: each returns 1 from the test on failure ---------------- */

#define FAIL(...)                                                        \
  do {                                                                   \
    fprintf(stderr, "    at %s:%d: ", __FILE__, __LINE__);               \
    fprintf(stderr, __VA_ARGS__);                                        \
    fputc('\n', stderr);                                                 \
    return 1;                                                            \
  } while (0)

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) FAIL("check failed: %s", #cond);                        \
  } while (0)

/* A call that must succeed. */
#define OK(call)                                                         \
  do {                                                                   \
    keyseat_status ok_ = (call);                                         \
    if (ok_ != KEYSEAT_OK)                                               \
      FAIL("%s returned %d: %s", #call, (int)ok_,                        \
           keyseat_last_error_message());                                \
  } while (0)

/* A call that must fail with `status`, and say why in the last error. */
#define FAILS_WITH(status, call)                                         \
  do {                                                                   \
    keyseat_status got_ = (call);                                        \
    if (got_ != (status))                                                \
      FAIL("%s returned %d, not %s (%d): %s", #call, (int)got_, #status, \
           (int)(status), keyseat_last_error_message());                 \
    if (keyseat_last_error_message()[0] == '\0')                         \
      FAIL("%s left no error message", #call);                           \
  } while (0)

double now_ms(void);
void sleep_ms(int ms);

/* ---- the server ----------------------------------------------------- */

typedef struct {
  char dir[256], db[300], log[300], url[64];
  int port, interval, timeout;
  pid_t pid;
} server;

/* Reads KEYSEAT_BIN, clears KEYSEAT_* from the environment (the flags
 * alone configure the servers) and makes the scratch directory. */
int harness_init(void);
/* Removes the scratch directory. */
void harness_done(void);
const char *keyseat_bin(void);

/* A server of its own directory `name`, heartbeat every `interval` s,
 * sessions timing out after `timeout` s. */
int server_new(server *s, const char *name, int interval, int timeout);
/* Starts it on `port` (0: any) and waits for "listening on". */
int server_start(server *s, int port);
/* SIGTERM, and waits for the exit. */
int server_stop(server *s);

/* `keyseat --database <s's> ARGS`; its output (stdout and stderr) into
 * `out`; returns the exit code (-1 when it could not run). */
int keyseat_cli(server *s, const char *args, char *out, size_t len);
/* A new key on `s` (`policy`: takeover or reject) into `key`. */
int make_key(server *s, const char *policy, char *key, size_t len);

/* ---- the lost callback ---------------------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int calls;
  keyseat_lost_reason reason;
  char other[128];
  int other_was_null;
  char message[512];
  double at_ms;
  pthread_t thread;
  /* When set, the callback ends this client from inside the callback. */
  keyseat_client *end_from_callback;
  keyseat_status end_status;
} told;

void told_init(told *t);
void told_destroy(told *t);
/* The keyseat_lost_callback; `user_data` is a `told`. */
void on_lost(void *user_data, keyseat_lost_reason reason,
             const char *other_device, const char *message);
/* The number of calls once there is one, or after `ms`. */
int told_wait(told *t, int ms);

/* The client's state (-1 if the call failed). */
keyseat_state state_of(keyseat_client *c, keyseat_lost_reason *why);
/* Options with a device name and 2 s calls. */
keyseat_options options(const char *device_name);

#endif
