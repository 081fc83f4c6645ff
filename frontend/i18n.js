// The page's words in English and Russian. Pure: no DOM, no network.

const MESSAGES = {
  en: {
    pageTitle: "backchat",
    conversations: "Conversations",
    transcript: "Conversation",
    newChat: "New chat",
    showConversations: "Show conversations",
    hideConversations: "Hide conversations",
    deleteConversation: "Delete “{title}”",
    confirmDelete: "Delete “{title}”? It is deleted on the server, for every device, and an answer still being written is stopped.",
    renameConversation: "Rename “{title}”",
    renameLabel: "Conversation name (Enter keeps it, Escape cancels)",
    loadMore: "Load more",
    loading: "Loading…",
    turnStillRunning: "Another answer in this conversation is still being written (started on another device?). Wait for it to end, then press Retry.",
    conversationGone: "This conversation no longer exists (deleted on another device?).",
    renameFailed: "Could not rename the conversation: {message}",
    deleteFailed: "Could not delete the conversation: {message}",
    readFailed: "Could not read the conversations: {message}",
    running: "running",
    inputLabel: "Message",
    placeholder: "Message backchat… (Enter sends, Shift+Enter adds a line)",
    send: "Send",
    stop: "Stop",
    stopping: "Stopping…",
    processing: "Background processing…",
    processingHint: "You can close or reload this page: the answer keeps coming.",
    reconnecting: "Reconnecting…",
    you: "You",
    assistant: "Assistant",
    thinking: "Thinking",
    toolCall: "Tool: {name}",
    toolInput: "Input",
    toolResult: "Result",
    toolWaiting: "Waiting for the result…",
    usage: "Tokens: {input} in · {output} out · {total} total",
    cancelled: "Cancelled: the run was stopped.",
    error: "Error: {message}",
    retry: "Retry",
    jumpToLatest: "Jump to latest",
    emptyTitle: "Start a conversation",
    emptyBody: "Answers are worked out in the background. Close or reload the tab whenever you like and come back to them.",
    sessionGone: "The server no longer knows this run (was the local stack restarted?).",
    unknownError: "Something went wrong.",
    signInTitle: "Sign in to backchat",
    apiKeyLabel: "API key",
    apiKeyHint: "Paste the API key you were given (a local make run prints one). This browser keeps it until you sign out.",
    userPoolHint: "You will sign in on your organisation's sign-in page and come back here.",
    signIn: "Sign in",
    signingIn: "Signing in…",
    signOut: "Sign out",
    keyRejected: "That key was not accepted. Check it and try again.",
    signInAgain: "The server no longer accepts your sign-in. Sign in again: unfinished answers carry on.",
    signInUnreachable: "Could not reach the server ({detail}). Try again.",
    signInRefused: "Sign-in did not complete: {detail}",
    signInStateMismatch: "Sign-in did not complete: the answer was not for this browser's request. Try again.",
    signInInsecure: "Signing in needs a secure page (https, or localhost).",
  },
  ru: {
    pageTitle: "backchat",
    conversations: "Диалоги",
    transcript: "Переписка",
    newChat: "Новый диалог",
    showConversations: "Показать диалоги",
    hideConversations: "Скрыть диалоги",
    deleteConversation: "Удалить «{title}»",
    confirmDelete: "Удалить «{title}»? Диалог удаляется на сервере, для всех устройств, а ответ, который ещё пишется, будет остановлен.",
    renameConversation: "Переименовать «{title}»",
    renameLabel: "Название диалога (Enter — сохранить, Escape — отменить)",
    loadMore: "Загрузить ещё",
    loading: "Загрузка…",
    turnStillRunning: "В этом диалоге ещё пишется другой ответ (начатый на другом устройстве?). Дождитесь его окончания и нажмите «Повторить».",
    conversationGone: "Этого диалога больше нет (удалён на другом устройстве?).",
    renameFailed: "Не удалось переименовать диалог: {message}",
    deleteFailed: "Не удалось удалить диалог: {message}",
    readFailed: "Не удалось загрузить диалоги: {message}",
    running: "выполняется",
    inputLabel: "Сообщение",
    placeholder: "Сообщение… (Enter — отправить, Shift+Enter — новая строка)",
    send: "Отправить",
    stop: "Остановить",
    stopping: "Останавливаю…",
    processing: "Обработка в фоне…",
    processingHint: "Страницу можно закрыть или перезагрузить: ответ продолжит приходить.",
    reconnecting: "Переподключение…",
    you: "Вы",
    assistant: "Ассистент",
    thinking: "Размышления",
    toolCall: "Инструмент: {name}",
    toolInput: "Вход",
    toolResult: "Результат",
    toolWaiting: "Ждём результат…",
    usage: "Токены: {input} на входе · {output} на выходе · {total} всего",
    cancelled: "Отменено: запуск остановлен.",
    error: "Ошибка: {message}",
    retry: "Повторить",
    jumpToLatest: "К последнему",
    emptyTitle: "Начните диалог",
    emptyBody: "Ответы готовятся в фоне. Вкладку можно закрыть или перезагрузить и вернуться к ним позже.",
    sessionGone: "Сервер больше не знает этот запуск (локальный стенд перезапускали?).",
    unknownError: "Что-то пошло не так.",
    signInTitle: "Вход в backchat",
    apiKeyLabel: "Ключ API",
    apiKeyHint: "Вставьте выданный вам ключ API (локальный make run печатает его). Браузер хранит его, пока вы не выйдете.",
    userPoolHint: "Вход выполняется на странице входа вашей организации, затем вы вернётесь сюда.",
    signIn: "Войти",
    signingIn: "Вход…",
    signOut: "Выйти",
    keyRejected: "Этот ключ не принят. Проверьте его и попробуйте ещё раз.",
    signInAgain: "Сервер больше не принимает ваш вход. Войдите снова: незаконченные ответы продолжатся.",
    signInUnreachable: "Сервер недоступен ({detail}). Попробуйте ещё раз.",
    signInRefused: "Вход не завершён: {detail}",
    signInStateMismatch: "Вход не завершён: ответ пришёл не на запрос этого браузера. Попробуйте ещё раз.",
    signInInsecure: "Для входа нужна защищённая страница (https или localhost).",
  },
};

export const SUPPORTED_LOCALES = Object.freeze(Object.keys(MESSAGES));
export const DEFAULT_LOCALE = "en";

/** Return the first supported locale among the browser's preferred languages, else English. */
export function chooseLocale(languages) {
  for (const tag of languages || []) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (Object.hasOwn(MESSAGES, primary)) return primary;
  }
  return DEFAULT_LOCALE;
}

/**
 * Return t(key, params) for locale: the message with each {name} replaced by params[name].
 * Numbers in params are formatted for the locale. A key missing in a locale falls back to English.
 */
export function translator(locale) {
  const messages = MESSAGES[locale] || MESSAGES[DEFAULT_LOCALE];
  const numbers = new Intl.NumberFormat(locale);
  return function t(key, params = {}) {
    const template = messages[key] ?? MESSAGES[DEFAULT_LOCALE][key] ?? key;
    return template.replace(/\{(\w+)\}/g, (whole, name) => {
      if (!Object.hasOwn(params, name)) return whole;
      const value = params[name];
      return typeof value === "number" ? numbers.format(value) : String(value);
    });
  };
}
