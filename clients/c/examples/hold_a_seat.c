/* Holds a keyseat seat until Enter is pressed or the seat is lost.
 *   hold_a_seat https://licenses.example.com ks_...
 * (compiled by clients/c/run-tests.sh; shown in docs/clients.md) */
#include <stdio.h>
#include <string.h>

#include "keyseat.h"

/* Runs on the client's heartbeat thread: only note it here; a real app
 * posts the news to its UI thread. */
static void on_lost(void *user_data, keyseat_lost_reason reason,
                    const char *other_device, const char *message) {
  (void)user_data;
  if (reason == KEYSEAT_LOST_SUPERSEDED && other_device)
    fprintf(stderr, "licence taken over by %s\n", other_device);
  else
    fprintf(stderr, "licence lost: %s\n", message);
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  keyseat_options options;
  memset(&options, 0, sizeof options);
  options.size = sizeof options;
  options.device_name = "Ana's laptop";

  keyseat_client *client = NULL;
  if (keyseat_client_new(argv[1], argv[2], &options, &client) != KEYSEAT_OK) {
    fprintf(stderr, "%s\n", keyseat_last_error_message()); /* e.g. a typo */
    return 1;
  }
  keyseat_client_set_lost_callback(client, on_lost, NULL);
  bool took_over = false;
  keyseat_status status = keyseat_client_start(client, &took_over);
  if (status != KEYSEAT_OK) {
    fprintf(stderr, "cannot start (%s): %s\n", keyseat_last_error_code(),
            keyseat_last_error_message()); /* "seats_full", ... */
    keyseat_client_free(client);
    return 1;
  }
  if (took_over) printf("The session on another device was ended.\n");

  printf("Licensed. Press Enter to quit.\n");
  getchar();
  keyseat_state state;
  keyseat_client_state(client, &state, NULL);
  printf("state before quitting: %d\n", (int)state);
  keyseat_client_end(client, NULL); /* frees the seat at once */
  keyseat_client_free(client);
  return 0;
}
