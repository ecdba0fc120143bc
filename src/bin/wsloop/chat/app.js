// wsloop chat: the page's side of the chat.v1 protocol (see mod.rs beside this file for the schema).
//
// Every piece of text that came from a user is put in the page with textContent (links as <a>
// elements whose text and href are set as properties), never as HTML. The WebSocket reconnects
// by itself with backoff and, once joined, rejoins with the same nickname (and the resume
// token of `welcome`, so a connection of this page not yet seen to end does not hold the
// nickname against it) and rooms. Each message sent stays marked as sending until the server
// echoes it, and as not sent if the server refused it or the connection dropped: consecutive
// failures share one row (a count, the reason and Retry all), announced once.
"use strict";

const PROTOCOL = "chat.v1";
const DEFAULT_ROOM = "lobby";
const TITLE = "wsloop chat";
const TYPING_EVERY_MS = 2500; // how often "typing" is sent while typing
const TYPING_SHOWN_MS = 6000; // how long someone is shown typing after their last "typing"
const ROOMS_EVERY_MS = 15000; // how often the list of other rooms is refreshed
const KEPT_ITEMS = 2000;      // a conversation's log keeps this many items, the oldest go
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const MAX_NICK = 24;          // characters; the server says what else a nickname may not have
const NICK_KEY = "wsloop-chat-nick";
const TOKEN_KEY = "wsloop-chat-token";
const PHONE = window.matchMedia("(max-width: 700px)");

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"), statusText: $("status-text"), me: $("me"), menu: $("menu"),
  menuUnread: $("menu-unread"),
  joinScreen: $("join-screen"), joinForm: $("join-form"), nick: $("nick"), joinError: $("join-error"),
  chat: $("chat-screen"), sidebar: $("sidebar"), rooms: $("rooms"), roomForm: $("room-form"),
  roomName: $("room-name"), otherRooms: $("other-rooms"), noOtherRooms: $("no-other-rooms"),
  dmSection: $("dm-section"), dms: $("dms"), users: $("users"), onlineCount: $("online-count"),
  title: $("conv-title"), info: $("conv-info"), leave: $("leave"), empty: $("empty"),
  joinLobby: $("join-lobby"), logWrap: $("log-wrap"), log: $("log"), jump: $("jump"),
  typing: $("typing"), composer: $("composer"), text: $("text"), send: $("send"),
  textCount: $("text-count"), announce: $("announce"),
};

let ws = null;
let backoff = BACKOFF_MIN_MS;
let reconnectTimer = null;
let roomsTimer = null;
let nick = null;       // the nickname asked for (kept across reconnects once welcomed)
let token = null;      // the resume token of the last welcome
let joined = false;    // welcomed on the current connection
let welcomedOnce = false;
let away = false;      // the logs say "Disconnected… Reconnecting…" and no "Reconnected" yet
let replaced = false;  // this page joined again elsewhere: no reconnecting by itself
let maxText = 2000;
let online = new Set();
let knownRooms = [];     // [{room, members}] of the last `rooms`
const convs = new Map(); // "#room" or "@nick" -> conversation
let active = null;       // key of the conversation shown
let lastTypingSent = 0;
let typingTarget = null; // the conversation key a "typing" was last sent for
let nextRef = 1;
const pending = new Map(); // ref -> { conv, li, msg }

// ---------------------------------------------------------------------------------------------
// Connection

function connect() {
  clearTimeout(reconnectTimer);
  replaced = false;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  setStatus("connecting", "connecting…");
  ws = new WebSocket(`${scheme}//${location.host}/ws`, PROTOCOL);
  ws.onopen = () => {
    setStatus("online", nick ? "connected, joining…" : "connected: pick a nickname");
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
    clearInterval(roomsTimer);
    failPending("not sent: the connection dropped");
    if (wasJoined) {
      systemAll(`Disconnected${closeWhy(event)}. Reconnecting…`);
      away = true;
    }
    if (event.code === 4409) {
      // Someone on another server of the cluster claimed this nickname first: pick another.
      askNickname(event.reason || "That nickname was just taken: pick another.");
    }
    if (event.code === 4001) {
      // This page's nickname was taken over by a newer connection of the same page (another tab
      // with a copy of this one's session): stay offline rather than take it back.
      replaced = true;
      askNickname("You joined again from another tab or window, so this one is disconnected. Join again here:");
      setStatus("offline", "offline: joined again elsewhere");
      return;
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
  const msg = { type: "join", nick, rooms: rooms.length ? rooms : [DEFAULT_ROOM] };
  if (token) msg.token = token;
  return send(msg);
}

function setStatus(kind, text) {
  el.status.className = `status ${kind}`;
  el.statusText.textContent = text;
}

// Back to the join form with `why`, keeping the conversations for the next join.
function askNickname(why) {
  const old = nick;
  nick = null;
  token = null;
  welcomedOnce = false;
  try { sessionStorage.removeItem(NICK_KEY); sessionStorage.removeItem(TOKEN_KEY); } catch { /* private mode */ }
  el.joinError.textContent = why;
  el.me.textContent = "";
  el.chat.hidden = true;
  el.joinScreen.hidden = false;
  el.menu.hidden = true;
  if (old) el.nick.value = old;
  el.nick.focus();
  el.nick.select();
}

// ---------------------------------------------------------------------------------------------
// Messages from the server

function onMessage(msg) {
  switch (msg.type) {
    case "welcome": {
      const fromForm = !el.joinScreen.hidden;
      joined = true;
      backoff = BACKOFF_MIN_MS;
      nick = msg.nick;
      token = msg.token || null;
      maxText = msg.max_text || maxText;
      online = new Set(msg.users);
      renderUsers();
      el.me.textContent = nick;
      try {
        sessionStorage.setItem(NICK_KEY, nick);
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
      } catch { /* private mode */ }
      el.joinScreen.hidden = true;
      el.chat.hidden = false;
      el.joinError.textContent = "";
      setStatus("online", `connected as ${nick}`);
      if (away) systemAll(welcomedOnce ? "Reconnected." : `Reconnected as ${nick}.`);
      away = false;
      welcomedOnce = true;
      renderLayout();
      if (fromForm) focusConversation();
      listRooms();
      clearInterval(roomsTimer);
      roomsTimer = setInterval(listRooms, ROOMS_EVERY_MS);
      break;
    }
    case "error":
      onError(msg);
      break;
    case "undelivered":
      onUndelivered(msg);
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
      conv.anchor = null;
      conv.awaitingHistory = true;
      // A first visit: the history goes above the "You joined" notice.
      if (!existed) conv.anchor = system(conv, `You joined #${msg.room}`);
      if (!active || !existed) show(conv.key);
      else renderHead();
      listRooms();
      break;
    }
    case "history": {
      const conv = convs.get(`#${msg.room}`);
      if (conv) addHistory(conv, msg.messages || []);
      break;
    }
    case "room_left":
      removeConversation(`#${msg.room}`);
      listRooms();
      break;
    case "rooms":
      knownRooms = msg.rooms || [];
      renderOtherRooms();
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
      received(conv, msg);
      break;
    }
    case "private": {
      const other = msg.from === nick ? msg.to : msg.from;
      const conv = conversation("dm", other);
      stopTyping(conv, msg.from);
      received(conv, msg);
      break;
    }
    case "typing": {
      const conv = convs.get(msg.room ? `#${msg.room}` : `@${msg.nick}`);
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
    el.joinError.textContent = msg.message.charAt(0).toUpperCase() + msg.message.slice(1);
    setStatus("online", "connected: pick a nickname");
    el.nick.focus();
    return;
  }
  if (joining) {
    // A rejoin after a reconnect: with the resume token, our own earlier connection would have
    // been replaced, so someone else took the nickname while we were away.
    askNickname(`${nick} was taken by someone else while you were away: pick another nickname.`);
    setStatus("online", "connected: pick a nickname");
    return;
  }
  const sent = msg.ref && pending.get(msg.ref);
  if (sent) {
    pending.delete(msg.ref);
    const why = msg.code === "rate_limited" ? "too many messages at once, retry in a moment" : msg.message;
    markFailed(sent, `not sent: ${why}`);
    return;
  }
  const conv = convs.get(active);
  if (conv) systemError(conv, `Error: ${msg.message}`);
}

// An error notice; the same error again right after it counts on its row instead of adding one.
function systemError(conv, text) {
  const last = conv.list.lastElementChild;
  if (last && last.classList.contains("error") && last.dataset.text === text) {
    last.dataset.count = String(Number(last.dataset.count) + 1);
    last.textContent = `${text} (${last.dataset.count} times)`;
    return;
  }
  const li = system(conv, text, "error");
  li.dataset.text = text;
  li.dataset.count = "1";
}

// One of our messages (delivered here) did not reach the chat's other servers.
function onUndelivered(msg) {
  const conv = convs.get(msg.room ? `#${msg.room}` : `@${msg.to}`);
  const text = msg.text.length > 60 ? `${msg.text.slice(0, 60)}…` : msg.text;
  const at = new Date(msg.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (conv) system(conv, `Your message "${text}" (${at}) ${msg.message}.`, "error");
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
    seen: new Set(),   // keys of the messages shown (to merge a history in)
    anchor: null,      // the first message received live since the last room_joined
    awaitingHistory: false,
  };
  conv.list.className = "messages";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "conv-button";
  const label = document.createElement("span");
  label.className = "conv-name";
  label.textContent = key;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  button.append(label, badge);
  button.addEventListener("click", () => { show(key); closeSidebar(); });
  conv.item.append(button);
  conv.item.dataset.key = key;
  convs.set(key, conv);
  if (kind === "room") {
    el.rooms.append(conv.item);
  } else {
    el.dms.append(conv.item);
    el.dmSection.hidden = false;
  }
  if (!active) show(key);
  renderOtherRooms();
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
    else { renderLayout(); focusConversation(); }
  }
  renderOtherRooms();
  renderUnread();
}

function show(key) {
  const conv = convs.get(key);
  if (!conv) return;
  active = key;
  conv.unread = 0;
  for (const c of convs.values()) {
    c.item.classList.toggle("active", c.key === key);
    c.item.querySelector("button").setAttribute("aria-current", c.key === key ? "true" : "false");
    renderBadge(c);
  }
  el.log.replaceChildren(conv.list);
  renderLayout();
  scrollDown();
  hideJump();
  renderTyping();
  el.text.placeholder = conv.kind === "room" ? `Message #${conv.name}` : `Private message to ${conv.name}`;
  renderCount();
  if (!PHONE.matches || !el.sidebar.classList.contains("open")) el.text.focus();
}

// What shows depends on whether a conversation is open: with none (the last room left), an
// invitation to join one instead of an empty log and a message box that would go nowhere.
function renderLayout() {
  const none = !convs.get(active);
  el.empty.hidden = !none;
  el.logWrap.hidden = none;
  el.log.hidden = none;
  el.composer.hidden = none;
  el.typing.hidden = none;
  if (none) {
    el.log.replaceChildren();
    el.text.value = "";
  }
  el.menu.hidden = !PHONE.matches || el.chat.hidden;
  renderHead();
}

// Focus where the user goes on: the message box, or with no conversation the one way to join
// one (so that focus never falls to the page's body).
function focusConversation() {
  if (!el.composer.hidden) el.text.focus();
  else if (!el.empty.hidden) el.joinLobby.focus();
}

function renderHead() {
  const conv = convs.get(active);
  el.title.textContent = conv ? conv.key : "No room";
  if (!conv) {
    el.info.textContent = "";
    el.leave.hidden = true;
    return;
  }
  if (conv.kind === "room") {
    const n = conv.members.size;
    el.info.textContent = `${n} ${n === 1 ? "member" : "members"}: ${[...conv.members].join(", ")}`;
    el.leave.textContent = "Leave";
    el.leave.setAttribute("aria-label", `Leave #${conv.name}`);
  } else {
    el.info.textContent = online.has(conv.name) ? "private conversation" : "private conversation (offline)";
    el.leave.textContent = "Close";
    el.leave.setAttribute("aria-label", `Close the conversation with ${conv.name}`);
  }
  el.leave.hidden = false;
}

function renderBadge(conv) {
  const badge = conv.item.querySelector(".badge");
  badge.hidden = conv.unread === 0;
  badge.replaceChildren(String(conv.unread), srOnly(" unread"));
  renderUnread();
}

// The unread count of every conversation, in the tab's title and on the phone's menu button.
function renderUnread() {
  const total = [...convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = total ? `(${total}) ${TITLE}` : TITLE;
  el.menuUnread.hidden = total === 0;
  el.menuUnread.textContent = String(total);
}

function renderUsers() {
  const names = [...online].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  el.onlineCount.textContent = String(names.length);
  el.users.replaceChildren(...names.map((name) => {
    const li = document.createElement("li");
    li.dataset.nick = name;
    const label = document.createElement("span");
    label.className = "user-name";
    label.textContent = name;
    if (name === nick) {
      li.classList.add("self");
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "you";
      li.append(avatar(name), label, you);
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conv-button";
      button.title = `Private message to ${name}`;
      button.append(avatar(name), label);
      button.addEventListener("click", () => { show(conversation("dm", name).key); closeSidebar(); });
      li.append(button);
    }
    return li;
  }));
  renderHead();
}

// The rooms that exist (someone is in them) and that we are not in, to join with one click.
function renderOtherRooms() {
  const others = knownRooms.filter((r) => !convs.has(`#${r.room}`));
  el.noOtherRooms.hidden = others.length > 0;
  el.otherRooms.replaceChildren(...others.map((r) => {
    const li = document.createElement("li");
    li.dataset.room = r.room;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conv-button";
    button.title = `Join #${r.room}`;
    const label = document.createElement("span");
    label.className = "conv-name";
    label.textContent = `#${r.room}`;
    const count = document.createElement("span");
    count.className = "members";
    count.append(String(r.members), srOnly(r.members === 1 ? " member" : " members"));
    button.append(label, count);
    button.addEventListener("click", () => { joinRoom(r.room); closeSidebar(); });
    li.append(button);
    return li;
  }));
}

// "1 message", "3 messages".
const plural = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

// Text for screen readers only.
function srOnly(text) {
  const span = document.createElement("span");
  span.className = "sr-only";
  span.textContent = text;
  return span;
}

function listRooms() {
  if (joined) send({ type: "list_rooms" });
}

function joinRoom(room) {
  const existing = convs.get(`#${room}`);
  if (existing) show(existing.key);
  else send({ type: "join_room", room });
}

// Each nickname gets one of a few distinct colours, all dark enough for white text on them and
// for themselves on white (WCAG AA, 4.5:1).
const COLORS = ["#c62828", "#2c57c9", "#1d7a45", "#9c4f0e", "#7b3fb3", "#0b6e66", "#b0205e", "#4f5b70"];

function color(name) {
  let h = 7;
  for (const c of name.toLowerCase()) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function avatar(name) {
  const a = document.createElement("span");
  a.className = "avatar";
  a.setAttribute("aria-hidden", "true");
  a.textContent = [...name][0].toUpperCase();
  a.style.backgroundColor = color(name);
  return a;
}

// A message's <time>: the time, with the date when it is not today (never for a follow-up
// message, whose day is its predecessor's); the full date and time in its title.
function setTime(node, ts, followUp = false) {
  const d = new Date(ts || Date.now());
  const now = new Date();
  const clock = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const date = d.toLocaleDateString([], d.getFullYear() === now.getFullYear()
    ? { day: "numeric", month: "short" } : { day: "numeric", month: "short", year: "numeric" });
  node.dateTime = d.toISOString();
  node.title = d.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
  node.textContent = followUp || d.toDateString() === now.toDateString() ? clock : `${date}, ${clock}`;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/g;

// Puts `text` in `p` as text nodes, with http(s) URLs as links: the link's text and address are
// set as properties, so nothing in `text` is ever parsed as markup.
function linkify(p, text) {
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0].replace(/[.,;:!?)\]]+$/, "");
    let href = null;
    try {
      const parsed = new URL(url);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") href = parsed.href;
    } catch { /* not a URL after all */ }
    if (!href) continue;
    p.append(document.createTextNode(text.slice(at, match.index)));
    const a = document.createElement("a");
    a.href = href;
    a.textContent = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow ugc";
    p.append(a);
    at = match.index + url.length;
  }
  p.append(document.createTextNode(text.slice(at)));
}

const messageKey = (m) => `${m.ts}|${m.from}|${m.text}`;

// Remembers a message as shown (the oldest are forgotten past KEPT_ITEMS, as the log drops them).
function remember(conv, key) {
  conv.seen.add(key);
  if (conv.seen.size > KEPT_ITEMS) conv.seen.delete(conv.seen.values().next().value);
}

// A message from a user (`message` or `private`): ours may settle one we sent.
function received(conv, msg) {
  const mine = msg.from === nick && msg.ref && pending.get(msg.ref);
  remember(conv, messageKey(msg));
  if (mine) {
    pending.delete(msg.ref);
    mine.li.classList.remove("pending");
    mine.li.querySelector(".state").remove();
    setTime(mine.li.querySelector("time"), msg.ts, mine.li.classList.contains("continued"));
    return;
  }
  const li = post(conv, msg.from, msg.text, msg.ts);
  if (conv.awaitingHistory && !conv.anchor) conv.anchor = li;
}

// The last messages of a room, on entering it: those not shown yet go before what came live
// since (a reconnect brings what was missed while away).
function addHistory(conv, messages) {
  const before = conv.anchor && conv.anchor.parentNode === conv.list ? conv.anchor : null;
  conv.awaitingHistory = false;
  conv.anchor = null;
  let added = 0;
  for (const m of messages) {
    if (typeof m.text !== "string" || typeof m.from !== "string") continue;
    const key = messageKey(m);
    if (conv.seen.has(key)) continue;
    remember(conv, key);
    const li = post(conv, m.from, m.text, m.ts, before, false);
    li.classList.add("earlier");
    added += 1;
  }
  if (added) {
    // Where the history ends and live messages begin.
    conv.list.querySelector(".divider")?.remove();
    const divider = document.createElement("li");
    divider.className = "divider";
    divider.textContent = "history above · live below";
    conv.list.insertBefore(divider, before);
  }
  if (conv.key === active) scrollDown();
}

// Puts a message in `conv`'s log (before `before`, or at the end) and returns its element.
function post(conv, from, text, ts, before = null, count = true) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.from = from;
  if (from === nick) li.classList.add("mine");
  li.tabIndex = -1; // the arrow keys move through the log
  li.dataset.day = new Date(ts || Date.now()).toDateString();
  const prev = before ? before.previousElementSibling : conv.list.lastElementChild;
  const followUp = prev && prev.classList.contains("msg") && prev.dataset.from === from
    && prev.dataset.day === li.dataset.day;
  if (followUp) li.classList.add("continued");
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
  setTime(when, ts, followUp);
  meta.append(who, when);
  const p = document.createElement("p");
  p.className = "text";
  linkify(p, text);
  body.append(meta, p);
  li.append(body);
  append(conv, li, before, count);
  return li;
}

function system(conv, text, kind = "notice") {
  const li = document.createElement("li");
  li.className = kind;
  li.tabIndex = -1;
  li.textContent = text;
  append(conv, li);
  return li;
}

function systemAll(text) {
  for (const conv of convs.values()) system(conv, text);
}

function dmNotice(name, text) {
  const conv = convs.get(`@${name}`);
  if (conv) { system(conv, text); if (active === conv.key) renderHead(); }
}

function append(conv, li, before = null, count = true) {
  const stick = conv.key === active && isAtBottom();
  conv.list.insertBefore(li, before);
  if (conv.list.childElementCount > KEPT_ITEMS) conv.list.firstElementChild.remove();
  const seen = conv.key === active && !document.hidden;
  const news = count && li.classList.contains("msg") && !li.classList.contains("mine");
  if (conv.key === active && stick) scrollDown();
  else if (conv.key === active && news) showJump();
  if (!seen && news) {
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

// Scrolled up, new messages do not move the log: a button says how many came and jumps down.
let unseenBelow = 0;

function showJump() {
  unseenBelow += 1;
  el.jump.textContent = `${plural(unseenBelow, "new message")} ↓`;
  el.jump.hidden = false;
}

function hideJump() {
  unseenBelow = 0;
  el.jump.hidden = true;
}

el.jump.addEventListener("click", () => {
  scrollDown();
  hideJump();
  el.text.focus();
});
el.log.addEventListener("scroll", () => { if (!el.jump.hidden && isAtBottom()) hideJump(); });

// The arrow keys (and Home, End) move the focus through the log's items; a follow-up message
// shows its time when it has the focus.
el.log.addEventListener("keydown", (event) => {
  const items = [...el.log.querySelectorAll(".messages > li")];
  const last = items.length - 1;
  const at = items.indexOf(document.activeElement.closest(".messages > li"));
  const to = { Home: 0, End: last, ArrowUp: at < 0 ? last : at - 1, ArrowDown: at < 0 ? 0 : at + 1 }[event.key];
  if (to === undefined || !items.length) return;
  event.preventDefault();
  items[Math.max(0, Math.min(last, to))].focus();
});

document.addEventListener("visibilitychange", () => {
  const conv = convs.get(active);
  if (!document.hidden && conv && conv.unread) {
    conv.unread = 0;
    renderBadge(conv);
  }
});

// ---------------------------------------------------------------------------------------------
// Sending, and messages not (yet) delivered

function sendMessage(conv, text) {
  const ref = `m${nextRef++}`;
  const msg = conv.kind === "room"
    ? { type: "say", room: conv.name, text, ref }
    : { type: "private", to: conv.name, text, ref };
  const li = post(conv, nick, text, Date.now(), null, false);
  li.classList.add("pending");
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "sending…";
  li.querySelector(".meta").append(state);
  const sent = { conv, li, msg };
  scrollDown();
  if (send(msg)) pending.set(ref, sent);
  else markFailed(sent, "not sent: not connected");
}

// Marks a message as not delivered. It joins the row of failures right before it if that has
// the same reason (a burst over the rate limit makes one row, not one per message), or starts
// a row: the count, the reason and a button that sends them all again, in their order. Screen
// readers hear one announcement for a burst.
function markFailed(sent, why) {
  const { li } = sent;
  li.classList.remove("pending");
  li.classList.add("failed");
  li.querySelector(".state")?.remove();
  let row = li.previousElementSibling;
  if (!row || !row.classList.contains("failed-row") || row.dataset.why !== why) {
    row = failedRow(sent.conv, why);
    li.before(row);
  }
  row.sent.push(sent);
  row.querySelector(".failed-list").append(li);
  const n = row.sent.length;
  row.querySelector(".failed-why").textContent = `${plural(n, "message")} ${why}`;
  row.querySelector(".retry").textContent = n === 1 ? "Retry" : `Retry all ${n}`;
  announceFailure(why);
}

function failedRow(conv, why) {
  const row = document.createElement("li");
  row.className = "failed-row";
  row.tabIndex = -1;
  row.dataset.why = why;
  row.sent = [];
  const head = document.createElement("div");
  head.className = "failed-head";
  const reason = document.createElement("span");
  reason.className = "failed-why";
  const retry = document.createElement("button");
  retry.type = "button";
  retry.className = "retry ghost";
  retry.addEventListener("click", () => {
    row.remove();
    if (convs.get(conv.key) !== conv) return;
    for (const sent of row.sent) sendMessage(conv, sent.msg.text);
    if (conv.key === active) el.text.focus();
  });
  head.append(reason, retry);
  const list = document.createElement("ol");
  list.className = "failed-list";
  row.append(head, list);
  return row;
}

// One announcement for failures that come together: "12 messages not sent: …".
let failuresUnannounced = 0;
let announceTimer = null;

function announceFailure(why) {
  failuresUnannounced += 1;
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    const n = failuresUnannounced;
    failuresUnannounced = 0;
    el.announce.textContent = `${plural(n, "message")} ${why}`;
  }, 300);
}

function failPending(why) {
  for (const sent of pending.values()) markFailed(sent, why);
  pending.clear();
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

function typingMessage(conv, on) {
  return conv.kind === "room"
    ? { type: "typing", room: conv.name, active: on }
    : { type: "typing", to: conv.name, active: on };
}

function typed() {
  renderCount();
  const conv = convs.get(active);
  if (!conv || !joined) return;
  const now = Date.now();
  if (el.text.value.trim() === "") {
    stopTypingSent();
    return;
  }
  if (typingTarget !== conv.key || now - lastTypingSent > TYPING_EVERY_MS) {
    send(typingMessage(conv, true));
    typingTarget = conv.key;
    lastTypingSent = now;
  }
}

function stopTypingSent() {
  const conv = convs.get(typingTarget);
  if (conv) send(typingMessage(conv, false));
  typingTarget = null;
  lastTypingSent = 0;
}

// ---------------------------------------------------------------------------------------------
// The message box: Enter sends, Shift+Enter starts a new line; a text over the limit is
// refused with a warning and kept, never cut.

const length = (text) => [...text].length; // in characters, as the server counts

function renderCount() {
  const n = length(el.text.value);
  const over = n > maxText;
  el.text.setAttribute("aria-invalid", over ? "true" : "false");
  el.composer.classList.toggle("over", over);
  if (over) el.textCount.textContent = `${n} / ${maxText} characters: ${n - maxText} too many, shorten it to send.`;
  else if (n > maxText - 200) el.textCount.textContent = `${n} / ${maxText} characters`;
  else el.textCount.textContent = "";
  el.text.style.height = "auto";
  el.text.style.height = `${Math.min(el.text.scrollHeight, 160)}px`;
}

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const conv = convs.get(active);
  const text = el.text.value;
  if (!conv || text.trim() === "") return;
  if (length(text) > maxText) {
    renderCount();
    el.textCount.textContent = `Not sent: ${length(text)} characters, at most ${maxText}. Shorten it to send.`;
    el.text.focus();
    return;
  }
  sendMessage(conv, text);
  el.text.value = "";
  renderCount();
  typingTarget = null;
  lastTypingSent = 0;
});

el.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});

el.text.addEventListener("input", typed);

// ---------------------------------------------------------------------------------------------
// Other user actions

el.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const wanted = el.nick.value.trim().normalize("NFC");
  const n = length(wanted);
  el.joinError.textContent = "";
  if (n === 0 || n > MAX_NICK) {
    el.joinError.textContent = n === 0 ? "Type a nickname first."
      : `A nickname has at most ${MAX_NICK} characters; this one has ${n}.`;
    el.nick.focus();
    return;
  }
  nick = wanted;
  if (!sendJoin() && !ws) connect(); // not connected: connect() joins on open
});

el.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = el.roomName.value.trim().toLowerCase();
  if (!room) return;
  joinRoom(room);
  el.roomName.value = "";
  closeSidebar();
});

el.joinLobby.addEventListener("click", () => joinRoom(DEFAULT_ROOM));
el.roomName.addEventListener("focus", listRooms);

el.leave.addEventListener("click", () => {
  const conv = convs.get(active);
  if (!conv) return;
  if (conv.kind === "room") send({ type: "leave_room", room: conv.name });
  else removeConversation(conv.key);
});

// The phone layout: the sidebar folds away behind the menu button.
function openSidebar(open) {
  el.sidebar.classList.toggle("open", open);
  el.menu.setAttribute("aria-expanded", String(open));
  if (open) listRooms();
  if (open) el.sidebar.querySelector("button, input")?.focus();
}

function closeSidebar() {
  if (el.sidebar.classList.contains("open")) {
    openSidebar(false);
    el.menu.focus();
  }
}

el.menu.addEventListener("click", () => openSidebar(!el.sidebar.classList.contains("open")));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeSidebar();
});
PHONE.addEventListener("change", () => { openSidebar(false); renderLayout(); });

try {
  const saved = sessionStorage.getItem(NICK_KEY);
  if (saved) { nick = saved; el.nick.value = saved; token = sessionStorage.getItem(TOKEN_KEY); }
} catch { /* private mode */ }
renderLayout();
connect();
