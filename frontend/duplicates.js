// The Duplicates view: the collection's groups of copies (GET /api/duplicates), largest first, each a row of
// thumbnails with dimensions, size and path. The copy to keep is marked (the server's suggestion first) and a
// click on another keeps that one instead. With the write key (writekey.js), "Remove the others from the
// index" deletes every other member's index entry (DELETE /api/images/{id}); files in the user's folders stay.

import {api, oneAtATime} from "./api.js";
import {img, li, plainClick, span} from "./dom.js";
import {setStatus} from "./view.js";
import {forgetWriteKey, keepWriteKey, withKey, writeKey} from "./writekey.js";

export const DUPLICATES = {kind: "duplicates", level: "near", minScore: null, tags: []};
const GROUPS = 10;     // groups asked for at a time

const byId = (id) => document.getElementById(id);
const box = {
  view: byId("duplicates"), heading: byId("dups-heading"), link: byId("duplicates-link"),
  skip: document.querySelector(".skip"),
  options: byId("dups-options"), level: byId("dups-level"), minScore: byId("dups-min-score"),
  keyForm: byId("key-form"), keyInput: byId("key-input"), keyHeld: byId("key-held"), keyForget: byId("key-forget"),
  status: byId("dups-status"), groups: byId("dups-groups"), more: byId("dups-more"),
};

const begin = oneAtATime();
// The report on screen: its query, groups fetched and resolved (resolved ones are gone from the server's
// list, so the next page starts at fetched - resolved), and the server's counts, kept up to date.
let report = null;
let defaultScore = null;   // the server's near threshold, shown when the query leaves it to the server

const say = (text, kind = "", retry = null) => setStatus(text, kind, retry, box.status);

export function showDuplicates(query) {
  document.body.classList.add("view-duplicates");
  box.view.hidden = false;
  box.link.setAttribute("aria-current", "page");
  Object.assign(box.skip, {href: "#dups-heading", textContent: "Skip to the groups"});
  document.title = "Duplicates · lookalike";
  box.level.value = query.level;
  box.minScore.disabled = query.level === "exact";
  box.minScore.value = query.level === "exact" ? "" : String(query.minScore ?? defaultScore ?? "");
  renderKey();
  report = {query, fetched: 0, resolved: 0, total: 0, pictures: 0};
  box.groups.replaceChildren();
  box.more.hidden = true;
  load();
}

export function hideDuplicates() {
  begin();   // an answer still on its way is dropped
  report = null;
  document.body.classList.remove("view-duplicates");
  box.view.hidden = true;
  box.link.removeAttribute("aria-current");
  Object.assign(box.skip, {href: "#results-heading", textContent: "Skip to results"});
}

// go(query, trail): app.js's navigation (a history entry and its URL for each choice of options).
export function initDuplicates(go) {
  box.link.addEventListener("click", (event) => {
    if (plainClick(event)) { event.preventDefault(); go(DUPLICATES, []); }
  });
  const apply = () => {
    const level = box.level.value;
    const typed = parseFloat(box.minScore.value);
    const minScore = level === "exact" || !Number.isFinite(typed) || typed === defaultScore ? null : typed;
    go({...DUPLICATES, level, minScore, tags: report ? report.query.tags : []}, []);
  };
  box.options.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  box.level.addEventListener("change", apply);
  box.more.addEventListener("click", load);
  box.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = box.keyInput.value.trim();
    box.keyInput.value = "";
    if (!key) return;
    keepWriteKey(key);
    renderKey();
    box.keyForget.focus();
  });
  box.keyForget.addEventListener("click", () => {
    forgetWriteKey();
    renderKey();
    box.keyInput.focus();
  });
}

// The key's form while there is none; a line saying it is kept (and a way to forget it) once there is.
function renderKey() {
  const held = Boolean(writeKey());
  box.keyForm.hidden = held;
  box.keyHeld.hidden = !held;
}

async function load() {
  const mine = report;
  const {query} = mine;
  const request = begin();
  const params = new URLSearchParams({level: query.level, limit: GROUPS, offset: mine.fetched - mine.resolved});
  if (query.level === "near" && query.minScore !== null) params.set("min_score", query.minScore);
  if (query.tags.length) params.set("tags", query.tags.join(","));
  // "More groups" from the keyboard: carry on from the first new group (read before the button is disabled).
  const focusFirst = mine.fetched > 0 && document.activeElement === box.more;
  box.more.disabled = true;
  if (!mine.fetched) say("Looking for copies…", "loading");
  let body;
  try {
    body = await api(`/api/duplicates?${params}`, {signal: request.signal});
  } catch (err) {
    if (!request.current()) return;
    box.more.disabled = false;
    say(err.message, "error", load);
    return;
  }
  if (!request.current() || report !== mine) return;
  if (query.level === "near") {
    defaultScore = query.minScore === null ? body.query.min_score : defaultScore;
    if (!box.minScore.value) box.minScore.value = String(body.query.min_score);
  }
  Object.assign(mine, {total: body.total, pictures: body.pictures});
  const items = body.groups.map(groupItem);
  box.groups.append(...items);
  mine.fetched += body.groups.length;
  box.more.disabled = false;
  summarise();
  if (focusFirst && items.length) items[0].querySelector(".dup-member").focus();
}

function summarise(done = "") {
  const {total, pictures, query} = report;
  const shown = box.groups.children.length;
  box.more.hidden = shown >= total;
  box.more.textContent = `More groups (${(total - shown).toLocaleString()} left)`;
  const kind = query.level === "exact" ? "exact copies (the same bytes)" : "near copies";
  const tagged = query.tags.length ? ` among the pictures tagged ${query.tags.join(" and ")}` : "";
  if (total === 0) {
    const tip = query.level === "near" ? " A lower least similarity finds looser copies." : "";
    say(`${done}No ${kind}${tagged || " in the collection"}.${tip}`, "empty");
    return;
  }
  say(`${done}${total.toLocaleString()} group${total === 1 ? "" : "s"} of ${kind}${tagged}, ` +
      `${pictures.toLocaleString()} pictures in all.` + (shown < total ? ` Showing ${shown.toLocaleString()}.` : ""));
}

// ---- one group ----------------------------------------------------------------------------------------

const sizeText = (bytes) => (bytes < 1000 ? `${bytes} B` : bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB`
  : `${(bytes / 1e6).toFixed(1)} MB`);

function groupItem(data) {
  const suggested = data.members.find((m) => m.keeper) || data.members[0];
  const group = {members: [...data.members], keeper: suggested.id, item: document.createElement("li"),
                 list: document.createElement("ul"), button: document.createElement("button"),
                 title: document.createElement("h2"), note: span("dup-note", "")};
  const {item, list, button, title, note} = group;
  item.className = "dup-group";
  title.className = "dup-title";
  list.className = "dup-members";
  button.type = "button";
  button.className = "dup-resolve";
  note.setAttribute("aria-live", "polite");
  const actions = document.createElement("div");
  actions.className = "dup-actions";
  actions.append(button, note);
  list.append(...data.members.map((m) => memberItem(m, suggested, (id) => { group.keeper = id; render(group); })));
  button.addEventListener("click", () => resolve(group));
  item.append(title, list, actions);
  render(group);
  return item;
}

// The group as it stands: the keeper pressed and outlined, the count of others on the button.
function render(group) {
  const keeper = group.members.find((m) => m.id === group.keeper);
  const others = group.members.length - 1;
  group.title.textContent = `${group.members.length} pictures`;
  for (const member of group.list.querySelectorAll(".dup-member")) {
    const kept = member.dataset.id === group.keeper;
    member.setAttribute("aria-pressed", String(kept));
    member.closest("li").classList.toggle("kept", kept);
  }
  group.button.textContent = `Remove the other${others === 1 ? "" : ` ${others}`} from the index`;
  group.button.setAttribute("aria-label", `Keep ${keeper.filename} and remove the other ${others} from the index`);
  note(group, `Keeping ${keeper.filename}.`);
}

function note(group, text, error = false) {
  group.note.textContent = text;
  group.note.classList.toggle("error", error);
}

function memberItem(member, suggested, choose) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "dup-member";
  button.dataset.id = member.id;
  button.title = `Keep ${member.filename}`;
  const frame = span("dup-frame", "");
  const picture = img(member.thumbnail_url, "");
  picture.loading = "lazy";
  picture.decoding = "async";
  frame.append(picture, span("dup-badge", "Keep"));
  const likeness = member.id === suggested.id ? "suggested to keep"
    : member.content_hash === suggested.content_hash ? "the same bytes"
    : `${Math.floor(Math.min(1, member.score + 0.0005) * 100)}% similar`;
  button.append(frame, span("dup-name", member.filename),
                span("dup-facts", `${member.width} × ${member.height} · ${sizeText(member.bytes)}`),
                span("dup-likeness", likeness), span("dup-path", member.path));
  button.addEventListener("click", () => choose(member.id));
  const item = li(button);
  item.dataset.id = member.id;
  return item;
}

// "Remove the others from the index": every member but the keeper, one DELETE each; the group then goes.
async function resolve(group) {
  const key = writeKey();
  if (!key) {
    note(group, "Removing pictures from the index needs the server's API key: enter it above.", true);
    box.keyInput.focus();
    return;
  }
  const mine = report;
  const keeper = group.members.find((m) => m.id === group.keeper);
  const others = group.members.filter((m) => m !== keeper);
  group.button.disabled = true;
  note(group, "Removing…");
  for (const member of others) {
    try {
      await api(`/api/images/${encodeURIComponent(member.id)}`, {method: "DELETE", headers: withKey(key)});
    } catch (err) {
      if (err.code !== "not_found") {       // not_found: gone already, as good as removed
        if (err.code === "unauthorized") {
          forgetWriteKey();
          renderKey();
        }
        group.button.disabled = false;
        render(group);
        note(group, err.message, true);
        return;
      }
    }
    group.members = group.members.filter((m) => m !== member);
    group.list.querySelector(`li[data-id="${member.id}"]`).remove();
  }
  if (report !== mine) return;               // the view was left meanwhile
  // Focus goes on to the next group (or the heading), not back to the top of the page.
  const next = group.item.nextElementSibling;
  group.item.remove();
  Object.assign(mine, {resolved: mine.resolved + 1, total: mine.total - 1,
                       pictures: mine.pictures - others.length - 1});
  summarise(`Kept ${keeper.filename} and removed ${others.length} other${others.length === 1 ? "" : "s"} ` +
            "from the index. ");
  (next ? next.querySelector('.dup-member[aria-pressed="true"]') : box.heading).focus();
}
