// wsloop chat: the page's side of the chat.v1 protocol (see examples/chat.rs for the schema).
//
// Every piece of text that came from a user is put in the page with textContent, never as HTML.
// The WebSocket reconnects by itself with backoff and, once joined, rejoins with the same
// nickname and rooms.
"use strict";

const PROTOCOL = "chat.v1";
const DEFAULT_ROOM = "lobby";
const TYPING_EVERY_MS = 2500; // how often "typing" is sent while typing
const TYPING_SHOWN_MS = 6000; // how long someone is shown typing after their last "typing"
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"), statusText: $("status-text"), me: $("me"),
  joinScreen: $("join-screen"), joinForm: $("join-form"), nick: $("nick"), joinError: $("join-error"),
  chat: $("chat-screen"), rooms: $("rooms"), roomForm: $("room-form"), roomName: $("room-name"),
  dmSection: $("dm-section"), dms: $("dms"), users: $("users"), onlineCount: $("online-count"),
  title: $("conv-title"), info: $("conv-info"), leave: $("leave"), log: $("log"),
  typing: $("typing"), composer: $("composer"), text: $("text"),
};

let ws = null;
let backoff = BACKOFF_MIN_MS;
let reconnectTimer = null;
let nick = null;       // the nickname asked for (kept across reconnects once welcomed)
let joined = false;    // welcomed on the current connection
let welcomedOnce = false;
let maxText = 2000;
let online = new Set();
const convs = new Map(); // "#room" or "@nick" -> conversation
let active = null;       // key of the conversation shown
let lastTypingSent = 0;
let typingRoom = null;

// ---------------------------------------------------------------------------------------------
// Connection

function connect() {
  clearTimeout(reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  setStatus("connecting", "connecting…");
  ws = new WebSocket(`${scheme}//${location.host}/ws`, PROTOCOL);
  ws.onopen = () => {
    setStatus("online", "connected");
    if (nick) sendJoin();
  };
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    onMessage(msg);
  };
  ws.onclose = (event) => {
    const wasJoined = joined;
    joined = false;
    ws = null;
    if (wasJoined) systemAll(`Disconnected${closeWhy(event)}. Reconnecting…`);
    if (event.code === 4409) {
      // Someone on another server of the cluster claimed this nickname first: pick another.
      nick = null;
      welcomedOnce = false;
      try { sessionStorage.removeItem("wsloop-chat-nick"); } catch { /* private mode */ }
      el.joinError.textContent = event.reason || "That nickname was just taken: pick another.";
      el.chat.hidden = true;
      el.joinScreen.hidden = false;
    }
    const delay = Math.round(backoff * (0.75 + Math.random() * 0.5));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setStatus("offline", `offline${closeWhy(event)}, retrying in ${(delay / 1000).toFixed(1)} s`);
    reconnectTimer = setTimeout(connect, delay);
  };
}

function closeWhy(event) {
  if (event.code === 1008) return ` (${event.reason || "rate limit"})`;
  if (event.code === 1009) return " (message too large)";
  if (event.code === 1001) return " (server restarting)";
  if (event.code === 4409) return " (nickname taken on another server)";
  return "";
}

function send(msg) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

function sendJoin() {
  const rooms = [...convs.values()].filter((c) => c.kind === "room").map((c) => c.name);
  return send({ type: "join", nick, rooms: rooms.length ? rooms : [DEFAULT_ROOM] });
}

function setStatus(kind, text) {
  el.status.className = `status ${kind}`;
  el.statusText.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Messages from the server

function onMessage(msg) {
  switch (msg.type) {
    case "welcome": {
      joined = true;
      backoff = BACKOFF_MIN_MS;
      nick = msg.nick;
      maxText = msg.max_text || maxText;
      el.text.maxLength = maxText;
      online = new Set(msg.users);
      renderUsers();
      el.me.textContent = nick;
      try { sessionStorage.setItem("wsloop-chat-nick", nick); } catch { /* private mode */ }
      el.joinScreen.hidden = true;
      el.chat.hidden = false;
      setStatus("online", `connected as ${nick}`);
      if (welcomedOnce) systemAll("Reconnected.");
      welcomedOnce = true;
      break;
    }
    case "error":
      onError(msg);
      break;
    case "user_online":
      online.add(msg.nick);
      renderUsers();
      dmNotice(msg.nick, `${msg.nick} is online`);
      break;
    case "user_offline":
      online.delete(msg.nick);
      renderUsers();
      dmNotice(msg.nick, `${msg.nick} went offline`);
      for (const conv of convs.values()) stopTyping(conv, msg.nick);
      break;
    case "room_joined": {
      const existed = convs.has(`#${msg.room}`);
      const conv = conversation("room", msg.room);
      conv.members = new Set(msg.members);
      conv.joined = true;
      if (!existed) system(conv, `You joined #${msg.room}`);
      if (!active || !existed) show(conv.key);
      else renderHead();
      break;
    }
    case "room_left":
      removeConversation(`#${msg.room}`);
      break;
    case "member_joined": {
      const conv = convs.get(`#${msg.room}`);
      if (!conv) break;
      conv.members.add(msg.nick);
      system(conv, `${msg.nick} joined #${msg.room}`);
      renderHead();
      break;
    }
    case "member_left": {
      const conv = convs.get(`#${msg.room}`);
      if (!conv) break;
      conv.members.delete(msg.nick);
      stopTyping(conv, msg.nick);
      system(conv, `${msg.nick} left #${msg.room}`);
      renderHead();
      break;
    }
    case "message": {
      const conv = conversation("room", msg.room);
      stopTyping(conv, msg.from);
      post(conv, msg.from, msg.text, msg.ts);
      break;
    }
    case "private": {
      const other = msg.from === nick ? msg.to : msg.from;
      const conv = conversation("dm", other);
      post(conv, msg.from, msg.text, msg.ts);
      break;
    }
    case "typing": {
      const conv = convs.get(`#${msg.room}`);
      if (!conv) break;
      if (msg.active) startTyping(conv, msg.nick);
      else stopTyping(conv, msg.nick);
      break;
    }
  }
}

function onError(msg) {
  const joining = msg.code === "nick_invalid" || msg.code === "nick_taken";
  if (joining && !welcomedOnce) {
    // The first join: say so on the form and let the user pick another.
    nick = null;
    el.joinError.textContent = msg.message;
    el.nick.focus();
    return;
  }
  if (joining) {
    // A rejoin after a reconnect: the old connection may not have been noticed as gone yet.
    setStatus("offline", "waiting for the previous connection to end…");
    if (ws) ws.close(1000, "rejoin refused");
    return;
  }
  const conv = convs.get(active);
  if (conv) system(conv, `Error: ${msg.message}`, "error");
}

// ---------------------------------------------------------------------------------------------
// Conversations

function conversation(kind, name) {
  const key = (kind === "room" ? "#" : "@") + name;
  let conv = convs.get(key);
  if (conv) return conv;
  conv = {
    key, kind, name, members: new Set(), joined: kind === "dm", unread: 0,
    typing: new Map(), // nick -> timer
    list: document.createElement("ol"),
    item: document.createElement("li"),
    lastFrom: null,
  };
  conv.list.className = "messages";
  const label = document.createElement("span");
  label.className = "conv-name";
  label.textContent = key;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  conv.item.append(label, badge);
  conv.item.dataset.key = key;
  conv.item.addEventListener("click", () => show(key));
  convs.set(key, conv);
  if (kind === "room") {
    el.rooms.append(conv.item);
  } else {
    el.dms.append(conv.item);
    el.dmSection.hidden = false;
  }
  if (!active) show(key);
  return conv;
}

function removeConversation(key) {
  const conv = convs.get(key);
  if (!conv) return;
  for (const timer of conv.typing.values()) clearTimeout(timer);
  conv.item.remove();
  convs.delete(key);
  el.dmSection.hidden = ![...convs.values()].some((c) => c.kind === "dm");
  if (active === key) {
    active = null;
    const next = convs.keys().next();
    if (!next.done) show(next.value);
    else { el.log.replaceChildren(); renderHead(); }
  }
}

function show(key) {
  const conv = convs.get(key);
  if (!conv) return;
  active = key;
  conv.unread = 0;
  for (const c of convs.values()) {
    c.item.classList.toggle("active", c.key === key);
    renderBadge(c);
  }
  el.log.replaceChildren(conv.list);
  scrollDown();
  renderHead();
  renderTyping();
  el.text.placeholder = conv.kind === "room" ? `Message #${conv.name}` : `Private message to ${conv.name}`;
  el.text.focus();
}

function renderHead() {
  const conv = convs.get(active);
  el.title.textContent = conv ? conv.key : "";
  if (!conv) {
    el.info.textContent = "";
    el.leave.hidden = true;
    return;
  }
  if (conv.kind === "room") {
    const n = conv.members.size;
    el.info.textContent = `${n} ${n === 1 ? "member" : "members"}: ${[...conv.members].join(", ")}`;
    el.leave.textContent = "Leave";
  } else {
    el.info.textContent = online.has(conv.name) ? "private conversation" : "private conversation (offline)";
    el.leave.textContent = "Close";
  }
  el.leave.hidden = false;
}

function renderBadge(conv) {
  const badge = conv.item.querySelector(".badge");
  badge.hidden = conv.unread === 0;
  badge.textContent = String(conv.unread);
}

function renderUsers() {
  const names = [...online].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  el.onlineCount.textContent = String(names.length);
  el.users.replaceChildren(...names.map((name) => {
    const li = document.createElement("li");
    li.dataset.nick = name;
    li.append(avatar(name));
    const label = document.createElement("span");
    label.className = "user-name";
    label.textContent = name;
    li.append(label);
    if (name === nick) {
      li.classList.add("self");
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "you";
      li.append(you);
    } else {
      li.title = `Private message to ${name}`;
      li.addEventListener("click", () => show(conversation("dm", name).key));
    }
    return li;
  }));
  renderHead();
}

// Each nickname gets one of a few distinct colours.
const COLORS = ["#e5484d", "#3b6ef5", "#2e9d5b", "#d9822b", "#8e4ec6", "#0d9488", "#db2777", "#64748b"];

function color(name) {
  let h = 7;
  for (const c of name.toLowerCase()) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function avatar(name) {
  const a = document.createElement("span");
  a.className = "avatar";
  a.textContent = name.slice(0, 1).toUpperCase();
  a.style.backgroundColor = color(name);
  return a;
}

function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// A message from a user: the nickname and the text go in as text nodes, never as markup.
function post(conv, from, text, ts) {
  const li = document.createElement("li");
  li.className = "msg";
  if (from === nick) li.classList.add("mine");
  const continued = conv.lastFrom === from;
  if (continued) li.classList.add("continued");
  li.append(avatar(from));
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from;
  who.style.color = color(from);
  const when = document.createElement("time");
  when.textContent = time(ts);
  meta.append(who, when);
  const p = document.createElement("p");
  p.className = "text";
  p.textContent = text;
  body.append(meta, p);
  li.append(body);
  append(conv, li);
  conv.lastFrom = from;
}

function system(conv, text, kind = "notice") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  append(conv, li);
  conv.lastFrom = null;
}

function systemAll(text) {
  for (const conv of convs.values()) system(conv, text);
}

function dmNotice(name, text) {
  const conv = convs.get(`@${name}`);
  if (conv) { system(conv, text); if (active === conv.key) renderHead(); }
}

function append(conv, li) {
  const stick = conv.key === active && isAtBottom();
  conv.list.append(li);
  if (conv.key === active) {
    if (stick) scrollDown();
  } else if (li.classList.contains("msg")) {
    conv.unread += 1;
    renderBadge(conv);
  }
}

function isAtBottom() {
  return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
}

function scrollDown() {
  el.log.scrollTop = el.log.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Typing indicators

function startTyping(conv, who) {
  clearTimeout(conv.typing.get(who));
  conv.typing.set(who, setTimeout(() => stopTyping(conv, who), TYPING_SHOWN_MS));
  if (conv.key === active) renderTyping();
}

function stopTyping(conv, who) {
  if (!conv.typing.has(who)) return;
  clearTimeout(conv.typing.get(who));
  conv.typing.delete(who);
  if (conv.key === active) renderTyping();
}

function renderTyping() {
  const conv = convs.get(active);
  const names = conv ? [...conv.typing.keys()] : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "several people are typing…";
  el.typing.textContent = text;
}

function typed() {
  const conv = convs.get(active);
  if (!conv || conv.kind !== "room" || !joined) return;
  const now = Date.now();
  if (el.text.value.trim() === "") {
    if (typingRoom) send({ type: "typing", room: typingRoom, active: false });
    typingRoom = null;
    lastTypingSent = 0;
    return;
  }
  if (typingRoom !== conv.name || now - lastTypingSent > TYPING_EVERY_MS) {
    send({ type: "typing", room: conv.name, active: true });
    typingRoom = conv.name;
    lastTypingSent = now;
  }
}

// ---------------------------------------------------------------------------------------------
// User actions

el.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const wanted = el.nick.value.trim();
  el.joinError.textContent = "";
  if (!/^[A-Za-z0-9_.-]{1,24}$/.test(wanted)) {
    el.joinError.textContent = "1 to 24 letters A-Z, digits, _ - or . please";
    return;
  }
  nick = wanted;
  if (!sendJoin()) {
    // Not connected yet: connect() joins on open.
    if (!ws) connect();
  }
});

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const conv = convs.get(active);
  const text = el.text.value;
  if (!conv || text.trim() === "") return;
  if (text.length > maxText) {
    system(conv, `Too long: at most ${maxText} characters.`, "error");
    return;
  }
  const msg = conv.kind === "room"
    ? { type: "say", room: conv.name, text }
    : { type: "private", to: conv.name, text };
  if (!send(msg)) {
    system(conv, "Not connected: the message was not sent.", "error");
    return;
  }
  el.text.value = "";
  typingRoom = null;
  lastTypingSent = 0;
});

el.text.addEventListener("input", typed);

el.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = el.roomName.value.trim().toLowerCase();
  if (!room) return;
  const existing = convs.get(`#${room}`);
  if (existing) show(existing.key);
  else send({ type: "join_room", room });
  el.roomName.value = "";
});

el.leave.addEventListener("click", () => {
  const conv = convs.get(active);
  if (!conv) return;
  if (conv.kind === "room") send({ type: "leave_room", room: conv.name });
  else removeConversation(conv.key);
});

try {
  const saved = sessionStorage.getItem("wsloop-chat-nick");
  if (saved) { nick = saved; el.nick.value = saved; }
} catch { /* private mode */ }
renderHead();
connect();
