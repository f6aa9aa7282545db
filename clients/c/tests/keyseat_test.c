/*
 * Tests of the C library against the real keyseat server binary, through
 * keyseat.h alone. Each test is a scenario of docs/clients.md, named after
 * it; harness.c starts the servers (port 0, a temp database, short
 * intervals) and makes keys with `keyseat keys create`.
 *
 *   KEYSEAT_BIN=target/debug/keyseat ./keyseat_test
 *
 * Waits poll for a condition with a deadline; the only plain waits are
 * the ones a scenario is about (holding a seat past the server's timeout).
 * Prints one line per test, then "N passed, N failed"; exits non-zero on
 * any failure. KEYSEAT_C_UNDER_VALGRIND=1 widens the one tight timing
 * bound (the 100 ms takeover notice) to 1 s.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static server quick;   /* heartbeat every 1 s, timeout 3 s */
static server holding; /* heartbeat every 30 s (held 25 s), timeout 60 s */
static server gone;    /* stopped for good by its test */
static double takeover_notice_ms = -1;
static int under_valgrind;

/* A start holds the seat through heartbeats past the server's timeout;
 * end frees it at once; ending twice is harmless. */
static int start_heartbeat_end(void) {
  char key[128], id[37];
  if (make_key(&quick, "reject", key, sizeof key)) return 1;
  keyseat_options oa = options("Device A"), ob = options("Device B");
  keyseat_client *a, *b;
  OK(keyseat_client_new(quick.url, key, &oa, &a));
  OK(keyseat_client_new(quick.url, key, &ob, &b));
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_NOT_STARTED);
  FAILS_WITH(KEYSEAT_ERR_WRONG_STATE, keyseat_client_session_id(a, id, sizeof id));
  bool took_over = true;
  OK(keyseat_client_start(a, &took_over));
  CHECK(!took_over);
  OK(keyseat_client_session_id(a, id, sizeof id));
  CHECK(strlen(id) == 36);
  FAILS_WITH(KEYSEAT_ERR_WRONG_STATE, keyseat_client_start(a, NULL));
  sleep_ms(quick.timeout * 1000 + 500); /* only heartbeats keep the seat */
  keyseat_lost_reason why = KEYSEAT_LOST_REJECTED;
  CHECK(state_of(a, &why) == KEYSEAT_STATE_ACTIVE && why == KEYSEAT_LOST_NONE);
  FAILS_WITH(KEYSEAT_ERR_REFUSED, keyseat_client_start(b, NULL));
  CHECK(strcmp(keyseat_last_error_code(), "seats_full") == 0);
  bool was_live = false;
  OK(keyseat_client_end(a, &was_live));
  CHECK(was_live);
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_ENDED);
  OK(keyseat_client_end(a, &was_live));
  CHECK(!was_live);
  OK(keyseat_client_start(b, NULL));
  CHECK(state_of(b, NULL) == KEYSEAT_STATE_ACTIVE);
  OK(keyseat_client_free(b)); /* ends B's session too */
  OK(keyseat_client_free(a));
  return 0;
}

/* B's start on A's key reaches A's callback as superseded with B's name
 * (`*took_over` tells B), and `took_over` is `ms` after B called start. */
static int takeover(server *s, double *ms) {
  char key[128];
  if (make_key(s, "takeover", key, sizeof key)) return 1;
  keyseat_options oa = options("Device A"), ob = options("Device B");
  keyseat_client *a, *b;
  OK(keyseat_client_new(s->url, key, &oa, &a));
  OK(keyseat_client_new(s->url, key, &ob, &b));
  told t;
  told_init(&t);
  OK(keyseat_client_set_lost_callback(a, on_lost, &t));
  OK(keyseat_client_start(a, NULL));
  sleep_ms(300); /* A's first heartbeat is sent (and held, if it is) */
  bool took_over = false;
  double before = now_ms();
  OK(keyseat_client_start(b, &took_over));
  CHECK(took_over);
  CHECK(told_wait(&t, 5000) == 1);
  *ms = t.at_ms - before;
  CHECK(t.reason == KEYSEAT_LOST_SUPERSEDED);
  CHECK(!t.other_was_null && strcmp(t.other, "Device B") == 0);
  CHECK(strcmp(t.message,
               "superseded: device \"Device B\" started with the same access key") == 0);
  CHECK(!pthread_equal(t.thread, pthread_self())); /* the heartbeat thread */
  keyseat_lost_reason why = KEYSEAT_LOST_NONE;
  CHECK(state_of(a, &why) == KEYSEAT_STATE_LOST && why == KEYSEAT_LOST_SUPERSEDED);
  bool was_live = true;
  OK(keyseat_client_end(a, &was_live));
  CHECK(!was_live);
  CHECK(state_of(b, NULL) == KEYSEAT_STATE_ACTIVE);
  OK(keyseat_client_end(b, &was_live));
  CHECK(was_live);
  CHECK(t.calls == 1); /* once */
  OK(keyseat_client_free(a));
  OK(keyseat_client_free(b));
  told_destroy(&t);
  return 0;
}

static int takeover_is_told_with_the_other_device(void) {
  double ms;
  if (takeover(&quick, &ms)) return 1;
  printf("    # timing: told %.0f ms after B's start (interval %d s)\n", ms,
         quick.interval);
  CHECK(ms <= 1500);
  return 0;
}

static int takeover_is_told_within_100_ms_with_a_30_s_interval(void) {
  double ms, bound = under_valgrind ? 1000 : 100;
  if (takeover(&holding, &ms)) return 1;
  takeover_notice_ms = ms;
  printf("    # timing: told %.0f ms after B's start (interval %d s)\n", ms,
         holding.interval);
  CHECK(ms <= bound);
  return 0;
}

/* A session on a new key of `s` (`policy`), its losses told to `t`
 * (initialized here); `key` has 128 bytes. */
static int started(server *s, const char *policy, char *key, told *t,
                   keyseat_client **out) {
  if (make_key(s, policy, key, 128)) return 1;
  keyseat_options o = options("Device A");
  OK(keyseat_client_new(s->url, key, &o, out));
  told_init(t);
  OK(keyseat_client_set_lost_callback(*out, on_lost, t));
  OK(keyseat_client_start(*out, NULL));
  return 0;
}

/* end() while a heartbeat is held returns at once and is not a loss. */
static int end_is_prompt_while_a_heartbeat_is_held(void) {
  char key[128];
  keyseat_client *a;
  told t;
  if (started(&holding, "takeover", key, &t, &a)) return 1;
  sleep_ms(300);
  double before = now_ms();
  bool was_live = false;
  OK(keyseat_client_end(a, &was_live));
  double took = now_ms() - before;
  printf("    # timing: end took %.0f ms\n", took);
  CHECK(took < 1000 && was_live);
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_ENDED && t.calls == 0);
  OK(keyseat_client_free(a));
  told_destroy(&t);
  return 0;
}

/* The server stops and comes back on the same port and database: the
 * session goes on (the new process keeps it live past a timeout). */
static int a_restart_is_survived(void) {
  char key[128];
  keyseat_client *a;
  told t;
  if (started(&quick, "takeover", key, &t, &a)) return 1;
  double down = now_ms();
  if (server_stop(&quick) || server_start(&quick, quick.port)) return 1;
  printf("    server down for %.0f ms\n", now_ms() - down);
  keyseat_state s = state_of(a, NULL);
  CHECK(s == KEYSEAT_STATE_ACTIVE || s == KEYSEAT_STATE_RETRYING);
  sleep_ms(quick.timeout * 1000 + 500);
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_ACTIVE && t.calls == 0);
  bool was_live = false;
  OK(keyseat_client_end(a, &was_live));
  CHECK(was_live);
  OK(keyseat_client_free(a));
  told_destroy(&t);
  return 0;
}

/* With the server gone the session stays usable (retrying) until the
 * lease runs out, then is lost as unreachable; the callback ends its own
 * client from inside. */
static int a_server_gone_for_good_is_lost_after_the_lease_not_before(void) {
  if (server_new(&gone, "gone", 1, 3)) return 1;
  char key[128];
  keyseat_client *a;
  told t;
  if (started(&gone, "takeover", key, &t, &a)) return 1;
  t.end_from_callback = a;
  /* Set again: the library's lock orders the write before the callback. */
  OK(keyseat_client_set_lost_callback(a, on_lost, &t));
  double stopped = now_ms();
  if (server_stop(&gone)) return 1;
  sleep_ms(1500);
  keyseat_state s = state_of(a, NULL);
  CHECK(t.calls == 0 && (s == KEYSEAT_STATE_RETRYING || s == KEYSEAT_STATE_ACTIVE));
  CHECK(told_wait(&t, 8000) == 1);
  double after = t.at_ms - stopped;
  printf("    # timing: lost %.0f ms after the server stopped (timeout %d s)\n",
         after, gone.timeout);
  /* The lease ends `timeout` after the last heartbeat, sent at most an
   * interval before the stop. */
  CHECK(after >= (gone.timeout - gone.interval) * 1000.0 - 100);
  CHECK(after <= gone.timeout * 1000.0 + 500 + (under_valgrind ? 1000 : 0));
  CHECK(t.reason == KEYSEAT_LOST_UNREACHABLE && t.other_was_null);
  CHECK(t.end_status == KEYSEAT_OK && state_of(a, NULL) == KEYSEAT_STATE_ENDED);
  OK(keyseat_client_free(a));
  told_destroy(&t);
  return 0;
}

/* An operator's kick reaches the callback as revoked; a key suspended
 * under a live session as key refused. */
static int an_admin_kick_is_told_as_revoked(void) {
  char key[128], id[37], args[128], out[4096];
  keyseat_client *a;
  told t;
  if (started(&quick, "takeover", key, &t, &a)) return 1;
  OK(keyseat_client_session_id(a, id, sizeof id));
  snprintf(args, sizeof args, "sessions kick %s", id);
  if (keyseat_cli(&quick, args, out, sizeof out) != 0) FAIL("kick: %s", out);
  CHECK(told_wait(&t, 3000) == 1 && t.reason == KEYSEAT_LOST_REVOKED);
  OK(keyseat_client_free(a));
  told_destroy(&t);

  told_init(&t);
  OK(keyseat_client_new(quick.url, key, NULL, &a));
  OK(keyseat_client_set_lost_callback(a, on_lost, &t));
  OK(keyseat_client_start(a, NULL));
  snprintf(args, sizeof args, "keys suspend %.11s", key);
  if (keyseat_cli(&quick, args, out, sizeof out) != 0) FAIL("suspend: %s", out);
  CHECK(told_wait(&t, 3000) == 1 && t.reason == KEYSEAT_LOST_KEY_REFUSED);
  CHECK(strstr(t.message, "key_suspended") != NULL);
  OK(keyseat_client_free(a));
  told_destroy(&t);
  return 0;
}

/* Every one-character change of a key fails keyseat_client_new, with no
 * request (the URL is a closed port) and without repeating the key. */
static int a_typo_is_refused_locally(void) {
  char key[128], typo[128];
  if (make_key(&quick, "takeover", key, sizeof key)) return 1;
  for (size_t at = 0; key[at]; at++) {
    strcpy(typo, key);
    typo[at] = typo[at] == 'A' ? 'B' : 'A';
    keyseat_client *c = (keyseat_client *)&c;
    FAILS_WITH(KEYSEAT_ERR_INVALID_KEY_FORMAT,
               keyseat_client_new("http://127.0.0.1:9", typo, NULL, &c));
    CHECK(c == NULL);
    CHECK(strstr(keyseat_last_error_message(), typo + 11) == NULL);
  }
  return 0;
}

static void *fail_on_another_thread(void *unused) {
  (void)unused;
  keyseat_client_start(NULL, NULL);
  return strdup(keyseat_last_error_message());
}

/* NULL pointers, invalid UTF-8 and unusable options or buffers are error
 * codes with a message naming the argument, never a crash; each thread
 * has its own last error. */
static int bad_inputs_are_typed_errors(void) {
  char key[128], buf[40];
  if (make_key(&quick, "takeover", key, sizeof key)) return 1;
  const char *url = quick.url;
  keyseat_client *c = NULL;
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_new(NULL, key, NULL, &c));
  CHECK(strcmp(keyseat_last_error_message(), "server_url is NULL") == 0);
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_new(url, NULL, NULL, &c));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_new(url, key, NULL, NULL));
  FAILS_WITH(KEYSEAT_ERR_INVALID_UTF8,
             keyseat_client_new("http://127.0.0.1:\xff", key, NULL, &c));
  FAILS_WITH(KEYSEAT_ERR_INVALID_UTF8, keyseat_client_new(url, "ks_\xc3\x28", NULL, &c));
  keyseat_options o = options("Caf\xc3");
  FAILS_WITH(KEYSEAT_ERR_INVALID_UTF8, keyseat_client_new(url, key, &o, &c));
  CHECK(strstr(keyseat_last_error_message(), "options->device_name") != NULL);
  o = options(NULL);
  o.size = 0;
  FAILS_WITH(KEYSEAT_ERR_INVALID_ARGUMENT, keyseat_client_new(url, key, &o, &c));
  o.size = sizeof o + 8;
  FAILS_WITH(KEYSEAT_ERR_INVALID_ARGUMENT, keyseat_client_new(url, key, &o, &c));
  FAILS_WITH(KEYSEAT_ERR_CONFIG, keyseat_client_new("ftp://127.0.0.1", key, NULL, &c));
  o = options(NULL);
  o.ca_file = "/nonexistent/ca.pem";
  FAILS_WITH(KEYSEAT_ERR_CONFIG, keyseat_client_new(url, key, &o, &c));
  CHECK(strstr(keyseat_last_error_message(), "/nonexistent/ca.pem") != NULL);
  o = options(NULL);
  o.public_key = "not-a-key";
  FAILS_WITH(KEYSEAT_ERR_CONFIG, keyseat_client_new(url, key, &o, &c));
  CHECK(c == NULL);

  keyseat_state s;
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_start(NULL, NULL));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_state(NULL, &s, NULL));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_end(NULL, NULL));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_session_id(NULL, buf, sizeof buf));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT,
             keyseat_client_set_lost_callback(NULL, on_lost, NULL));
  OK(keyseat_client_free(NULL));
  OK(keyseat_client_new(url, key, NULL, &c));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_state(c, NULL, NULL));
  OK(keyseat_client_end(c, NULL)); /* nothing to end */
  OK(keyseat_client_start(c, NULL));
  FAILS_WITH(KEYSEAT_ERR_INVALID_ARGUMENT, keyseat_client_session_id(c, buf, 36));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_client_session_id(c, NULL, 37));
  OK(keyseat_client_free(c));

  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_machine_fingerprint(NULL, buf, 33));
  FAILS_WITH(KEYSEAT_ERR_NULL_ARGUMENT, keyseat_machine_fingerprint("app", NULL, 33));
  keyseat_status got = keyseat_machine_fingerprint("app", buf, 10);
  CHECK(got == KEYSEAT_ERR_INVALID_ARGUMENT || got == KEYSEAT_ERR_UNAVAILABLE);

  FAILS_WITH(KEYSEAT_ERR_INVALID_UTF8, keyseat_client_new(url, "\xff", NULL, &c));
  pthread_t other;
  void *theirs = NULL;
  CHECK(pthread_create(&other, NULL, fail_on_another_thread, NULL) == 0);
  pthread_join(other, &theirs);
  CHECK(theirs && strcmp(theirs, "client is NULL") == 0);
  free(theirs);
  CHECK(strstr(keyseat_last_error_message(), "UTF-8") != NULL);
  CHECK(strcmp(keyseat_version(), "0.1.0") == 0);
  return 0;
}

static void *start_on_another_thread(void *client) {
  keyseat_status *got = malloc(sizeof *got);
  *got = keyseat_client_start(client, NULL);
  return got;
}

/* Unknown key, seats full, revoked key and no server at all: each its own
 * code, refusals with the contract's. (The first start runs on a thread
 * of the test's own that then exits: under valgrind, what Rust's std
 * keeps per thread is freed with it; see tests/valgrind.supp.) */
static int refusals_carry_the_contracts_codes(void) {
  char key[128], other[128], out[4096], args[64];
  if (make_key(&holding, "takeover", other, sizeof other)) return 1;
  if (make_key(&quick, "reject", key, sizeof key)) return 1;
  keyseat_client *c, *a;
  OK(keyseat_client_new(quick.url, other, NULL, &c));
  pthread_t thread;
  void *got = NULL;
  CHECK(pthread_create(&thread, NULL, start_on_another_thread, c) == 0);
  pthread_join(thread, &got);
  CHECK(got && *(keyseat_status *)got == KEYSEAT_ERR_REFUSED);
  free(got);
  FAILS_WITH(KEYSEAT_ERR_REFUSED, keyseat_client_start(c, NULL));
  CHECK(strcmp(keyseat_last_error_code(), "invalid_key") == 0);
  CHECK(state_of(c, NULL) == KEYSEAT_STATE_NOT_STARTED);
  OK(keyseat_client_free(c));

  OK(keyseat_client_new(quick.url, key, NULL, &a));
  OK(keyseat_client_new(quick.url, key, NULL, &c));
  OK(keyseat_client_start(a, NULL));
  FAILS_WITH(KEYSEAT_ERR_REFUSED, keyseat_client_start(c, NULL));
  CHECK(strcmp(keyseat_last_error_code(), "seats_full") == 0);
  snprintf(args, sizeof args, "keys revoke %.11s", key);
  if (keyseat_cli(&quick, args, out, sizeof out) != 0) FAIL("revoke: %s", out);
  FAILS_WITH(KEYSEAT_ERR_REFUSED, keyseat_client_start(c, NULL));
  CHECK(strcmp(keyseat_last_error_code(), "key_revoked") == 0);
  CHECK(strstr(keyseat_last_error_message(), key + 11) == NULL);
  OK(keyseat_client_free(a));
  OK(keyseat_client_free(c));

  keyseat_options o = options(NULL);
  o.timeout_ms = 500;
  OK(keyseat_client_new("http://127.0.0.1:9", key, &o, &c));
  FAILS_WITH(KEYSEAT_ERR_UNREACHABLE, keyseat_client_start(c, NULL));
  CHECK(strcmp(keyseat_last_error_code(), "") == 0);
  OK(keyseat_client_free(c));
  return 0;
}

/* A client for a new key on `s` that pins `signer`'s public key (`key`
 * and `pin`: 128 and 256 bytes, kept alive for the client's making). */
static int pinned_client(server *s, server *signer, char *key, char *pin,
                         keyseat_client **out) {
  if (make_key(s, "takeover", key, 128)) return 1;
  if (keyseat_cli(signer, "signing-key show --pin", pin, 256) != 0)
    FAIL("signing-key show: %s", pin);
  pin[strcspn(pin, "\r\n")] = '\0';
  keyseat_options o = options("Device A");
  o.public_key = pin;
  OK(keyseat_client_new(s->url, key, &o, out));
  return 0;
}

/* With the server's public key pinned, its answers verify: start,
 * heartbeats and end work. */
static int a_verified_session_starts_heartbeats_and_ends(void) {
  char key[128], pin[256];
  keyseat_client *a;
  if (pinned_client(&quick, &quick, key, pin, &a)) return 1;
  OK(keyseat_client_start(a, NULL));
  sleep_ms(quick.interval * 1000 + 500);
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_ACTIVE);
  bool was_live = false;
  OK(keyseat_client_end(a, &was_live));
  CHECK(was_live);
  OK(keyseat_client_free(a));
  return 0;
}

/* Answers signed by another key than the pinned one (here: another
 * server's) are refused as untrusted. The forgeries of this scenario are
 * the Rust client's own tests (tests/signing.rs), whose code this is. */
static int an_impostor_is_refused(void) {
  char key[128], pin[256];
  keyseat_client *a;
  if (pinned_client(&quick, &holding, key, pin, &a)) return 1;
  FAILS_WITH(KEYSEAT_ERR_UNTRUSTED, keyseat_client_start(a, NULL));
  CHECK(state_of(a, NULL) == KEYSEAT_STATE_NOT_STARTED);
  OK(keyseat_client_free(a));
  return 0;
}

/* The fingerprint is SHA-256 of "keyseat-fingerprint-v1\0<app>\0<machine
 * id>", its first 16 bytes in hex (checked with sha256sum). */
static int the_fingerprint_is_a_salted_hash(void) {
  char fp[33], expected[128] = "";
  keyseat_status got = keyseat_machine_fingerprint("app-one", fp, sizeof fp);
  if (access("/etc/machine-id", R_OK) != 0 && access("/var/lib/dbus/machine-id", R_OK) != 0) {
    CHECK(got == KEYSEAT_ERR_UNAVAILABLE);
    printf("    no machine id here: KEYSEAT_ERR_UNAVAILABLE\n");
    return 0;
  }
  OK(got);
  FILE *p = popen("id=$(cat /etc/machine-id 2>/dev/null || cat /var/lib/dbus/machine-id);"
                  " printf 'keyseat-fingerprint-v1\\000app-one\\000%s' \"$id\" | sha256sum",
                  "r");
  CHECK(p && fgets(expected, sizeof expected, p));
  pclose(p);
  expected[32] = '\0';
  CHECK(strcmp(fp, expected) == 0);
  char again[33];
  OK(keyseat_machine_fingerprint("app-one", again, sizeof again));
  CHECK(strcmp(fp, again) == 0);
  OK(keyseat_machine_fingerprint("app-two", again, sizeof again));
  CHECK(strcmp(fp, again) != 0);
  return 0;
}

int main(void) {
  under_valgrind = getenv("KEYSEAT_C_UNDER_VALGRIND") != NULL;
  if (harness_init()) return 2;
  printf("keyseat C library %s, server %s\n", keyseat_version(), keyseat_bin());
  if (server_new(&quick, "quick", 1, 3) || server_new(&holding, "holding", 30, 60)) {
    server_stop(&quick);
    harness_done();
    return 1;
  }
  struct {
    const char *name;
    int (*run)(void);
  } tests[] = {
#define TEST(name) {#name, name}
      TEST(start_heartbeat_end),
      TEST(takeover_is_told_with_the_other_device),
      TEST(takeover_is_told_within_100_ms_with_a_30_s_interval),
      TEST(end_is_prompt_while_a_heartbeat_is_held),
      TEST(a_restart_is_survived),
      TEST(a_server_gone_for_good_is_lost_after_the_lease_not_before),
      TEST(an_admin_kick_is_told_as_revoked),
      TEST(a_typo_is_refused_locally),
      TEST(bad_inputs_are_typed_errors),
      TEST(refusals_carry_the_contracts_codes),
      TEST(a_verified_session_starts_heartbeats_and_ends),
      TEST(an_impostor_is_refused),
      TEST(the_fingerprint_is_a_salted_hash),
  };
  int passed = 0, failed = 0;
  double t0 = now_ms();
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    double t = now_ms();
    int rc = tests[i].run();
    printf("%s %s (%.1f s)\n", rc == 0 ? "ok" : "FAILED", tests[i].name,
           (now_ms() - t) / 1e3);
    fflush(stdout);
    rc == 0 ? passed++ : failed++;
  }
  server_stop(&quick);
  server_stop(&holding);
  server_stop(&gone);
  harness_done();
  if (takeover_notice_ms >= 0)
    printf("takeover notice with a 30 s interval: %.0f ms\n", takeover_notice_ms);
  printf("C library tests in %.1f s\n", (now_ms() - t0) / 1e3);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
