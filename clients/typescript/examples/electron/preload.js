// The renderer gets a narrow bridge: the licence's state, pushed and asked.
const { contextBridge, ipcRenderer } = require('electron');

contextBridge.exposeInMainWorld('licence', {
  onChange: (callback) => ipcRenderer.on('licence', (_event, state) => callback(state)),
  state: () => ipcRenderer.invoke('licence:state'),
});
