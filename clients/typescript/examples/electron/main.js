// Electron's main process holds the seat; the renderer is told over IPC.
// (Untested here: CI has no Electron. run-tests.sh checks the syntax.)
//
//   npm install electron /path/to/keyseat-client-0.1.0.tgz
//   KEYSEAT_URL=https://licenses.example.com KEYSEAT_KEY=ks_... npx electron main.js
const { app, BrowserWindow, ipcMain } = require('electron');
const path = require('node:path');
const { Client, KeyseatError, machineFingerprint } = require('keyseat-client');

let session = null;
let win = null;

/** Sends the licence's state to the window (the renderer shows it). */
function tell(state) {
  if (win && !win.isDestroyed()) win.webContents.send('licence', state);
}

async function holdSeat() {
  const client = new Client(process.env.KEYSEAT_URL, process.env.KEYSEAT_KEY, {
    deviceName: require('node:os').hostname(),
    fingerprint: machineFingerprint('com.example.solver') ?? undefined,
    // publicKey: 'h9Mg6h6_H47D5SQqOv-1SVlP830gUWgu9e8zR0XbBJM', // keyseat signing-key show --pin
    onEvent: (e) => e.type === 'heartbeat_failed' && tell({ state: 'retrying', leaseLeftMs: e.leaseLeftMs }),
  });
  try {
    session = await client.start();
  } catch (e) {
    // InvalidKeyFormat (a typo), SeatsFull, KeyRevoked, ServerUnreachable, ...
    tell({ state: 'refused', code: e instanceof KeyseatError ? e.code : 'error', message: e.message });
    return;
  }
  const others = session.info.terminated.map((t) => t.deviceName ?? 'another device');
  tell({ state: 'active', disconnected: others });
  session.onLost((lost) => tell({ state: 'lost', reason: lost.reason, device: lost.deviceName, message: String(lost) }));
}

app.whenReady().then(() => {
  win = new BrowserWindow({ webPreferences: { preload: path.join(__dirname, 'preload.js') } });
  win.loadFile(path.join(__dirname, 'index.html'));
  ipcMain.handle('licence:state', () => (session ? { state: session.state, message: session.lost ? String(session.lost) : '' } : { state: 'starting' }));
  win.webContents.once('did-finish-load', holdSeat);
});

// Give the seat back before quitting (end() is quick: it does not wait for a heartbeat).
let quitting = false;
app.on('before-quit', (event) => {
  if (quitting || !session) return;
  event.preventDefault();
  quitting = true;
  session.end({ timeoutMs: 2000 }).catch(() => false).finally(() => app.quit());
});
app.on('window-all-closed', () => app.quit());
