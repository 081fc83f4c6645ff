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
    this.listSignature = "";
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
   * select(conversationId), remove(conversationId), wake() (the network or the tab came back).
   */
  bind(handlers) {
    const { el } = this;
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
      const id = button.closest("[data-conversation-id]").dataset.conversationId;
      if (button.dataset.action === "open") {
        this.setSidebarOpen(false);
        handlers.select(id);
      } else if (button.dataset.action === "delete") {
        handlers.remove(id);
      }
    });
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
    this.document.defaultView.addEventListener("online", () => handlers.wake());
    this.document.addEventListener("visibilitychange", () => {
      if (this.document.visibilityState === "visible") handlers.wake();
    });
  }

  setSidebarOpen(open) {
    this.el.app.classList.toggle("sidebar-open", open);
    this.el.scrim.hidden = !open;
    this.el.menuButton.setAttribute("aria-expanded", String(open));
    this.el.menuButton.setAttribute("aria-label", this.t(open ? "hideConversations" : "showConversations"));
  }

  /** Show the conversation list; rebuilt only when what it shows changed, so focus survives polls. */
  renderConversations(conversations, currentId, runningIds) {
    const signature = JSON.stringify([currentId, conversations.map((c) => [c.id, c.title, runningIds.has(c.id)])]);
    if (signature === this.listSignature) return;
    this.listSignature = signature;
    const items = conversations.map((conversation) => {
      const title = conversation.title || this.t("newChat");
      const item = element(this.document, "li", { className: "conversation", testId: "conversation-item" });
      item.dataset.conversationId = conversation.id;
      const open = element(this.document, "button", { className: "conversation-open", testId: "conversation-open", attrs: { type: "button" } });
      open.dataset.action = "open";
      open.append(element(this.document, "span", { className: "conversation-title", text: title }));
      if (runningIds.has(conversation.id)) {
        open.append(element(this.document, "span", {
          className: "running-dot", testId: "conversation-running", attrs: { title: this.t("running"), "aria-label": this.t("running") },
        }));
      }
      if (conversation.id === currentId) {
        item.classList.add("current");
        open.setAttribute("aria-current", "true");
      }
      const remove = element(this.document, "button", {
        className: "conversation-delete", testId: "conversation-delete", text: "×",
        attrs: { type: "button", "aria-label": this.t("deleteConversation", { title }), title: this.t("deleteConversation", { title }) },
      });
      remove.dataset.action = "delete";
      item.append(open, remove);
      return item;
    });
    this.el.list.replaceChildren(...items);
  }

  /** Show one conversation (or the empty state for a new chat) from scratch. */
  showConversation(conversation, retryable) {
    for (const { article } of this.turns.values()) article.remove();
    this.turns.clear();
    const turns = conversation ? conversation.turns : [];
    this.el.empty.hidden = turns.length > 0;
    this.el.title.textContent = conversation ? conversation.title : this.t("newChat");
    this.document.title = conversation ? `${conversation.title} · ${this.t("pageTitle")}` : this.t("pageTitle");
    for (const turn of turns) this.renderTurn(turn, retryable(turn));
    this.scrollToBottom();
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
      this.el.transcript.insertBefore(view.article, this.el.empty);
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
