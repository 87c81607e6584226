// What both Altoponix pages share: the log, and connecting with
// socket.io.js's defaults to the gateway named by `?gateway=`.
var socket = undefined;
// The Engine.IO transports used, in order (the first, then each upgrade).
window.transports = [];

function log(s) {
  var line = document.createElement("div");
  line.textContent = s;
  document.getElementById("output").appendChild(line);
}

// Connects, runs `joined(socket)` on connect, and logs each of `events`
// (and its reason, if it has one).
function connect(joined, events) {
  var url = new URLSearchParams(location.search).get("gateway");
  if (socket !== undefined) socket.disconnect();
  socket = io.connect(url);
  document.getElementById("output").textContent = "";
  socket.io.on("open", function () {
    var engine = socket.io.engine;
    window.transports.push(engine.transport.name);
    engine.on("upgrade", function (transport) {
      window.transports.push(transport.name);
    });
  });
  socket.on("connect", function () {
    document.getElementById("status").textContent = "";
    log("Connected to server!");
    joined(socket);
  });
  socket.on("disconnect", function () {
    log("Disconnected");
  });
  events.forEach(function (name) {
    socket.on(name, function (s) {
      log(name);
      if (s && s.reason) log(s.reason);
      if (name.endsWith(" failed") && name !== "command failed") socket.disconnect();
    });
  });
}
