// The only module that touches the DOM. Model output and user text never reach innerHTML:
// user text is set with textContent, answers go through markdown-it (raw HTML off) and DOMPurify.

import MarkdownIt from "./vendor/markdown-it.esm.min.js";
import DOMPurify from "./vendor/purify.es.js";

const markdown = new MarkdownIt({ html: false, linkify: true });
// Remote images in model output would be tracking pixels (and the CSP blocks them anyway):
// `![alt](url)` shows as a plain link instead.
markdown.disable("image");

// markdown-it's validateLink already drops javascript:, vbscript:, file: and data: links, and
// DOMPurify drops unsafe URLs too; this keeps only web and mail links, whatever either one allows.
const SAFE_HREF = /^(?:https?:|mailto:)/i;
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A" || !node.hasAttribute("href")) return;
  if (!SAFE_HREF.test(node.getAttribute("href").trim())) {
    node.removeAttribute("href");
    return;
  }
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", "noopener noreferrer nofollow");
});

const PURIFY_OPTIONS = Object.freeze({
  RETURN_DOM_FRAGMENT: true,
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select"],
  // markdown-it writes table alignment as style="", which the page's CSP would refuse anyway.
  FORBID_ATTR: ["style"],
});

/** Return model markdown as a sanitized DocumentFragment, ready to insert. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(markdown.render(text), PURIFY_OPTIONS);
}

const NEAR_BOTTOM_PX = 48;
const NOTICE_MS = 8000;
// The API's limit on a conversation's title.
const TITLE_MAX_CHARS = 200;

function element(document, tag, { className, testId, text, attrs } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (testId) node.dataset.testid = testId;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function formatToolInput(input) {
  if (input === null || input === undefined) return "";
  try {
    return JSON.stringify(input, null, 2);
  } catch {
    return String(input);
  }
}

export class ChatView {
  /**
   * @param {Document} document
   * @param {(key: string, params?: object) => string} t  the translator from i18n.js
   * @param {string} locale
   */
  constructor(document, t, locale) {
    this.document = document;
    this.t = t;
    const find = (testId) => document.querySelector(`[data-testid="${testId}"]`);
    this.el = {
      app: find("app"),
      menuButton: find("menu-button"),
      scrim: find("scrim"),
      newChat: find("new-chat"),
      newChatCompact: find("new-chat-compact"),
      list: find("conversation-list"),
      loadMore: find("load-more"),
      notice: find("notice"),
      loading: find("loading"),
      title: find("chat-title"),
      connection: find("connection-status"),
      transcript: find("transcript"),
      empty: find("empty-state"),
      jump: find("jump-to-latest"),
      composer: find("composer"),
      input: find("message-input"),
      send: find("send-button"),
      stop: find("stop-button"),
    };
    this.turns = new Map();
    this.shownId = undefined;
    this.listSignature = "";
    // The list as last asked for, and the conversation whose name is being edited (the list
    // is not rebuilt meanwhile, so what is typed survives a refresh).
    this.list = null;
    this.editingId = null;
    this.noticeTimer = null;
    this.composerBusy = false;
    document.documentElement.lang = locale;
    this.translateStaticText();
  }

  translateStaticText() {
    for (const node of this.document.querySelectorAll("[data-i18n]")) node.textContent = this.t(node.dataset.i18n);
    for (const node of this.document.querySelectorAll("[data-i18n-label]")) {
      node.setAttribute("aria-label", this.t(node.dataset.i18nLabel));
    }
    for (const node of this.document.querySelectorAll("[data-i18n-placeholder]")) {
      node.setAttribute("placeholder", this.t(node.dataset.i18nPlaceholder));
    }
    this.document.title = this.t("pageTitle");
  }

  /**
   * Connect the user's actions to the app: handlers.send(text), stop(), retry(turnId), newChat(),
   * select(conversationId), rename(conversationId, title), remove(conversationId) (once the user
   * confirmed), loadMore(), wake() (the network, the tab or the focus came back).
   */
  bind(handlers) {
    const { el } = this;
    const win = this.document.defaultView;
    el.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = el.input.value;
      if (text.trim() === "" || this.composerBusy) return;
      handlers.send(text);
    });
    el.input.addEventListener("keydown", (event) => {
      // isComposing: Enter that confirms an IME candidate (Chinese, Japanese...) must not send.
      if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
      event.preventDefault();
      el.composer.requestSubmit();
    });
    el.stop.addEventListener("click", () => handlers.stop());
    for (const button of [el.newChat, el.newChatCompact]) {
      button.addEventListener("click", () => {
        this.setSidebarOpen(false);
        handlers.newChat();
      });
    }
    el.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const item = button.closest("[data-conversation-id]");
      const id = item.dataset.conversationId;
      const title = item.querySelector(".conversation-title").textContent;
      if (button.dataset.action === "open") {
        this.setSidebarOpen(false);
        handlers.select(id);
      } else if (button.dataset.action === "rename") {
        this.editTitle(id);
      } else if (button.dataset.action === "delete" && win.confirm(this.t("confirmDelete", { title }))) {
        handlers.remove(id);
      }
    });
    el.list.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = this.editingId;
      const title = event.target.elements.title.value;
      this.stopEditing();
      handlers.rename(id, title);
    });
    el.list.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || this.editingId === null) return;
      // Escape leaves the name as it was (and does not also close the drawer).
      event.stopPropagation();
      this.stopEditing();
    });
    el.list.addEventListener("focusout", (event) => {
      if (this.editingId !== null && event.target.name === "title") this.stopEditing({ focus: false });
    });
    el.loadMore.addEventListener("click", () => handlers.loadMore());
    el.transcript.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action='retry']");
      if (button) handlers.retry(button.closest("[data-turn-id]").dataset.turnId);
    });
    el.transcript.addEventListener("scroll", () => {
      el.jump.hidden = this.isNearBottom();
    }, { passive: true });
    el.jump.addEventListener("click", () => this.scrollToBottom());
    el.menuButton.addEventListener("click", () => this.setSidebarOpen(!el.app.classList.contains("sidebar-open")));
    el.scrim.addEventListener("click", () => this.setSidebarOpen(false));
    this.document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.setSidebarOpen(false);
    });
    win.addEventListener("online", () => handlers.wake());
    win.addEventListener("focus", () => handlers.wake());
    this.document.addEventListener("visibilitychange", () => {
      if (this.isVisible()) handlers.wake();
    });
    win.addEventListener("hashchange", () => {
      const id = this.addressedConversation();
      if (id) handlers.select(id);
      else handlers.newChat();
    });
  }

  isVisible() {
    return this.document.visibilityState === "visible";
  }

  /** Return the conversation the address names (`#c=<id>`), or null. */
  addressedConversation() {
    const params = new URLSearchParams(this.document.location.hash.slice(1));
    return params.get("c") || null;
  }

  /** Put the conversation on screen in the address (none: no fragment), so a reload reopens it. */
  showAddress(conversationId) {
    const { location, defaultView } = this.document;
    const url = new URL(location.href);
    url.hash = conversationId ? new URLSearchParams({ c: conversationId }).toString() : "";
    if (url.href !== location.href) defaultView.history.replaceState(defaultView.history.state, "", url.href);
  }

  /** Show a short message (a refused rename or delete, a conversation gone) for a few seconds. */
  showNotice(text) {
    clearTimeout(this.noticeTimer);
    this.el.notice.textContent = text;
    this.el.notice.hidden = false;
    this.noticeTimer = setTimeout(() => {
      this.el.notice.hidden = true;
    }, NOTICE_MS);
  }

  setSidebarOpen(open) {
    this.el.app.classList.toggle("sidebar-open", open);
    this.el.scrim.hidden = !open;
    this.el.menuButton.setAttribute("aria-expanded", String(open));
    this.el.menuButton.setAttribute("aria-label", this.t(open ? "hideConversations" : "showConversations"));
  }

  /**
   * Show the conversation list: each conversation {id, title, draft}, which one is on screen,
   * which ones run, and whether older ones can be loaded. Rebuilt only when what it shows
   * changed (so focus survives polls), and not while a name is being edited.
   */
  renderConversations(conversations, currentId, runningIds, { hasMore = false } = {}) {
    this.list = { conversations, currentId, runningIds };
    this.el.loadMore.hidden = !hasMore;
    if (this.editingId === null) this.drawList();
  }

  drawList() {
    if (!this.list) return;
    const { conversations, currentId, runningIds } = this.list;
    const signature = JSON.stringify([
      this.editingId, currentId, conversations.map((c) => [c.id, c.title, c.draft, runningIds.has(c.id)]),
    ]);
    if (signature === this.listSignature) return;
    this.listSignature = signature;
    this.el.list.replaceChildren(...conversations.map((conversation) => this.conversationItem(conversation, currentId, runningIds)));
  }

  conversationItem(conversation, currentId, runningIds) {
    const doc = this.document;
    const title = conversation.title || this.t("newChat");
    const item = element(doc, "li", { className: "conversation", testId: "conversation-item" });
    item.dataset.conversationId = conversation.id;
    if (conversation.id === this.editingId) {
      const form = element(doc, "form", { className: "conversation-rename-form", testId: "rename-form" });
      const input = element(doc, "input", {
        className: "conversation-rename-input", testId: "rename-input",
        attrs: { name: "title", type: "text", maxlength: String(TITLE_MAX_CHARS), required: "", "aria-label": this.t("renameLabel") },
      });
      input.value = conversation.title;
      form.append(input);
      item.append(form);
      return item;
    }
    const open = element(doc, "button", { className: "conversation-open", testId: "conversation-open", attrs: { type: "button" } });
    open.dataset.action = "open";
    open.append(element(doc, "span", { className: "conversation-title", text: title }));
    if (runningIds.has(conversation.id)) {
      open.append(element(doc, "span", {
        className: "running-dot", testId: "conversation-running", attrs: { title: this.t("running"), "aria-label": this.t("running") },
      }));
    }
    if (conversation.id === currentId) {
      item.classList.add("current");
      open.setAttribute("aria-current", "true");
    }
    item.append(open);
    if (!conversation.draft) {
      item.append(this.itemButton("rename", "✎", this.t("renameConversation", { title })));
    }
    item.append(this.itemButton("delete", "×", this.t("deleteConversation", { title })));
    return item;
  }

  itemButton(action, symbol, label) {
    const button = element(this.document, "button", {
      className: `conversation-action conversation-${action}`, testId: `conversation-${action}`, text: symbol,
      attrs: { type: "button", "aria-label": label, title: label },
    });
    button.dataset.action = action;
    return button;
  }

  /** Turn a conversation's name into a text field (Enter keeps it, Escape or leaving drops it). */
  editTitle(conversationId) {
    this.editingId = conversationId;
    this.drawList();
    const input = this.el.list.querySelector("[data-testid='rename-input']");
    if (input) {
      input.focus();
      input.select();
    }
  }

  stopEditing({ focus = true } = {}) {
    const id = this.editingId;
    this.editingId = null;
    this.drawList();
    if (!focus) return;
    const item = [...this.el.list.children].find((node) => node.dataset.conversationId === id);
    const button = item && item.querySelector("[data-action='rename']");
    if (button) button.focus();
  }

  /**
   * Show a conversation (or the empty state for a new chat): its turns in order, reusing what is
   * on screen. A conversation whose turns are being read for the first time shows "Loading…".
   */
  showConversation(conversation, retryable) {
    const id = conversation ? conversation.id : null;
    const switched = id !== this.shownId;
    this.shownId = id;
    const follow = switched || this.isNearBottom();
    const turns = (conversation && conversation.turns) || [];
    const wanted = new Set(turns.map((turn) => turn.id));
    for (const [turnId, view] of this.turns) {
      if (!wanted.has(turnId)) {
        view.article.remove();
        this.turns.delete(turnId);
      }
    }
    let anchor = this.el.transcript.firstElementChild;
    for (const turn of turns) {
      this.renderTurn(turn, retryable(turn));
      const { article } = this.turns.get(turn.id);
      if (article === anchor) anchor = anchor.nextElementSibling;
      else this.el.transcript.insertBefore(article, anchor);
    }
    const loading = Boolean(conversation) && conversation.turns === null;
    this.el.loading.hidden = !loading;
    this.el.empty.hidden = turns.length > 0 || loading;
    const title = conversation ? conversation.title || this.t(loading ? "loading" : "newChat") : this.t("newChat");
    this.el.title.textContent = title;
    this.document.title = conversation ? `${title} · ${this.t("pageTitle")}` : this.t("pageTitle");
    if (follow) this.scrollToBottom();
  }

  /** Update (or add) one turn; follow the new text only if the reader was already at the bottom. */
  updateTurn(turn, retryable) {
    const follow = this.isNearBottom();
    this.renderTurn(turn, retryable);
    if (follow) this.scrollToBottom();
    else this.el.jump.hidden = this.isNearBottom();
  }

  renderTurn(turn, retryable) {
    let view = this.turns.get(turn.id);
    if (!view) {
      view = this.createTurn(turn);
      this.turns.set(turn.id, view);
      this.el.transcript.insertBefore(view.article, this.el.loading);
      this.el.empty.hidden = true;
    }
    const { article } = view;
    article.dataset.status = turn.status;
    article.dataset.sessionId = turn.sessionId || "";
    article.setAttribute("aria-busy", String(turn.status === "sending" || turn.status === "running"));
    this.renderSteps(view, turn.steps);
    if (view.answerText !== turn.answer) {
      view.answer.replaceChildren(renderMarkdown(turn.answer));
      view.answerText = turn.answer;
    }
    view.answer.hidden = turn.answer === "";
    this.renderStatus(view, turn, retryable);
  }

  createTurn(turn) {
    const doc = this.document;
    const article = element(doc, "article", { className: "turn", testId: "turn" });
    article.dataset.turnId = turn.id;
    const user = element(doc, "div", { className: "message message-user" });
    user.append(
      element(doc, "span", { className: "visually-hidden", text: `${this.t("you")}:` }),
      element(doc, "div", { className: "bubble", testId: "user-text", text: turn.user }),
    );
    const assistant = element(doc, "div", { className: "message message-assistant" });
    const steps = element(doc, "div", { className: "steps", testId: "steps" });
    const answer = element(doc, "div", { className: "answer markdown", testId: "answer" });
    const status = element(doc, "div", { className: "turn-status", testId: "turn-status" });
    assistant.append(element(doc, "span", { className: "visually-hidden", text: `${this.t("assistant")}:` }), steps, answer, status);
    article.append(user, assistant);
    return { article, steps, answer, status, stepViews: [], answerText: null, statusSignature: null };
  }

  renderSteps(view, steps) {
    steps.forEach((step, index) => {
      let stepView = view.stepViews[index];
      if (!stepView || stepView.kind !== step.kind) {
        stepView = step.kind === "tool" ? this.createToolStep() : this.createThinkingStep();
        if (view.stepViews[index]) view.stepViews[index].details.replaceWith(stepView.details);
        else view.steps.append(stepView.details);
        view.stepViews[index] = stepView;
      }
      if (step.kind === "tool") {
        stepView.summary.textContent = this.t("toolCall", { name: step.toolName || "?" });
        stepView.input.textContent = formatToolInput(step.toolInput);
        stepView.result.textContent = step.result === null ? this.t("toolWaiting") : step.result;
        stepView.result.classList.toggle("pending", step.result === null);
      } else {
        stepView.text.textContent = step.text;
      }
    });
    // A retried turn starts over with fewer steps (none at first): drop the old ones.
    for (const stale of view.stepViews.splice(steps.length)) stale.details.remove();
    view.steps.hidden = steps.length === 0;
  }

  createThinkingStep() {
    const details = element(this.document, "details", { className: "step step-thinking", testId: "thinking" });
    const summary = element(this.document, "summary", { text: this.t("thinking") });
    const text = element(this.document, "p", { className: "step-text" });
    details.append(summary, text);
    return { kind: "thinking", details, text };
  }

  createToolStep() {
    const doc = this.document;
    const details = element(doc, "details", { className: "step step-tool", testId: "tool-call" });
    const summary = element(doc, "summary");
    const input = element(doc, "pre", { className: "step-code", testId: "tool-input" });
    const result = element(doc, "pre", { className: "step-code", testId: "tool-result" });
    details.append(
      summary,
      element(doc, "div", { className: "step-label", text: this.t("toolInput") }), input,
      element(doc, "div", { className: "step-label", text: this.t("toolResult") }), result,
    );
    return { kind: "tool", details, summary, input, result };
  }

  renderStatus(view, turn, retryable) {
    const usage = turn.usage || {};
    const signature = JSON.stringify([turn.status, turn.cancelRequested, turn.error, usage, retryable]);
    if (signature === view.statusSignature) return;
    view.statusSignature = signature;
    const doc = this.document;
    const parts = [];
    view.status.className = `turn-status status-${turn.status}`;
    if (turn.status === "sending" || turn.status === "running") {
      const line = element(doc, "p", { className: "processing", testId: "processing" });
      line.append(element(doc, "span", { className: "spinner", attrs: { "aria-hidden": "true" } }));
      line.append(doc.createTextNode(this.t(turn.cancelRequested ? "stopping" : "processing")));
      parts.push(line);
      if (!turn.cancelRequested) parts.push(element(doc, "p", { className: "hint", text: this.t("processingHint") }));
    } else if (turn.status === "done") {
      parts.push(element(doc, "p", {
        className: "usage", testId: "usage",
        text: this.t("usage", { input: usage.inputTokens ?? 0, output: usage.outputTokens ?? 0, total: usage.totalTokens ?? 0 }),
      }));
    } else if (turn.status === "cancelled") {
      parts.push(element(doc, "p", { className: "cancelled", testId: "cancelled", text: this.t("cancelled") }));
    } else if (turn.status === "error") {
      parts.push(element(doc, "p", {
        className: "error", testId: "error-message", attrs: { role: "alert" },
        text: this.t("error", { message: turn.error || this.t("unknownError") }),
      }));
      if (retryable) {
        const retry = element(doc, "button", { className: "retry", testId: "retry-button", text: this.t("retry"), attrs: { type: "button" } });
        retry.dataset.action = "retry";
        parts.push(retry);
      }
    }
    view.status.replaceChildren(...parts);
  }

  /** Switch the composer between Send and Stop (a conversation runs one turn at a time). */
  setComposer({ running, stopping }) {
    this.composerBusy = running;
    this.el.send.hidden = running;
    this.el.stop.hidden = !running;
    this.el.stop.disabled = stopping;
    this.el.stop.textContent = this.t(stopping ? "stopping" : "stop");
  }

  /** Show or hide "Reconnecting…". */
  setConnection(reachable) {
    this.el.connection.hidden = reachable;
    this.el.connection.textContent = reachable ? "" : this.t("reconnecting");
  }

  clearInput() {
    this.el.input.value = "";
  }

  focusInput() {
    this.el.input.focus();
  }

  isNearBottom() {
    const { transcript } = this.el;
    return transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight <= NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.el.transcript.scrollTop = this.el.transcript.scrollHeight;
    this.el.jump.hidden = true;
  }
}
