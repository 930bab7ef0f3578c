/**
 * terminal.ts — the screen: printing messages while someone is typing.
 *
 * A message may arrive while the user is half-way through typing a line. The idea, in three
 * steps, as smallchat's client does it: 1. erase the draft (the prompt and what has been typed
 * so far), 2. print the message, 3. draw the prompt and the draft again, below it.
 *
 * client.ts sees only createTerminal(handlers): a Terminal that says a line (maybe in colour),
 * shows a prompt (secret or not), rings the bell and closes; the handlers hear of a typed line,
 * a paste of several lines, the end of the input and Ctrl-C. At a TTY readline edits the line,
 * passwords are not echoed and never enter the Up-arrow history, and there is colour unless
 * NO_COLOR is set. From a pipe (a script, or `client.ts < file`): plain lines in and out, every
 * prompt on its own line, no escape code, no bell.
 *
 * Layout: the interface and the main path (the three steps); pastes; refinements that rely on
 * readline's internals, each saying where it was checked and what happens without it; measuring
 * the draft's rows as the terminal draws them. Exported: what client.ts uses.
 */

import process from 'node:process';
import readline from 'node:readline';
import { PassThrough, Writable } from 'node:stream';
import { stripVTControlCharacters, styleText } from 'node:util';

// === The interface and the main path =============================================================

export type Colour = 'red' | 'green' | 'yellow' | 'cyan' | 'dim' | 'bold';

export type TerminalHandlers = {
  onLine: (line: string, piped: boolean) => void; // Enter, or a line from a pipe
  onPaste: (lines: string[]) => void; // a paste holding line breaks (TTY only): text, not keys
  onEnd: () => void; // Ctrl-D, the end of a pipe, or the terminal went away
  onInterrupt: () => void; // Ctrl-C on an empty line at a TTY (elsewhere it is a signal)
};

export type Terminal = {
  /** Prints one line without disturbing the draft. `replacesTypedLine`: the line just typed,
   * if still the last thing on the screen, is erased first (a chat line takes its place). */
  say: (text: string, colour?: Colour, replacesTypedLine?: boolean) => void;
  /** Shows a prompt ('' shows none). `secret`: what is typed is not echoed, nor kept.
   * `newScreen`: a half-typed line was meant for the screen before; it is not carried over. */
  prompt: (text: string, secret: boolean, newScreen?: boolean) => void;
  bell: () => void; // BEL, at a TTY only: the user may be looking at another window
  close: () => void;
};

type Screen = { // what the terminal remembers between calls
  lineEditor: readline.Interface; // reads lines; on a TTY also edits them (arrows, history)
  isTty: boolean; // stdin and stdout are both a terminal, and readline has not closed
  colour: boolean; // stdout is a terminal and NO_COLOR is not set
  prompt: string; // the prompt shown ('' while the client waits for something)
  secret: boolean; // a password is being typed: readline's echo is swallowed
  /** TTY: while readline's echo is held back (see holdEcho), the row the cursor was on. */
  heldAtRow: number | null;
  /** TTY: the rows the line just typed takes, while it is still the last thing on the screen
   * (0 once anything was printed or prompted below it); a chat line is redrawn in its place. */
  typedRows: number;
};

export function createTerminal(handlers: TerminalHandlers): Terminal {
  const isTty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  // readline echoes what is typed to its output. To hide a password we give it an output that
  // passes writes through to stdout unless `secret` is set. (It also needs the screen width.)
  const echo = new Writable({
    write(chunk, _encoding, done) {
      if (!screen.secret && screen.heldAtRow === null) process.stdout.write(chunk);
      done();
    },
  });
  Object.defineProperty(echo, 'columns', { get: () => process.stdout.columns });
  if (isTty) surviveRawModeFailure();
  // At a TTY readline reads the keys without the pastes (see keysWithoutPastes).
  const input = isTty ? keysWithoutPastes((text) => handlers.onPaste(pastedLines(text)))
    : process.stdin;
  const screen: Screen = {
    // From a pipe nothing is echoed; we print prompts ourselves.
    lineEditor: readline.createInterface({
      input, output: isTty ? echo : undefined, terminal: isTty, historySize: 100,
    }),
    isTty, colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
    prompt: '', secret: false, heldAtRow: null, typedRows: 0,
  };
  const editor = screen.lineEditor;
  // A password must not come back with the Up arrow. readline announces each new history entry
  // (before the 'line' event) and lets its listener change the list: we take the password out.
  editor.on('history', (history: string[]) => screen.secret && history.shift());
  editor.on('line', (line) => {
    noteTypedLine(screen, line);
    handlers.onLine(line, !isTty);
  });
  editor.on('close', () => {
    // From now on print plainly: Deno's readline throws if asked to draw a prompt after it
    // closed, and that would cost the client its logout.
    screen.isTty = false;
    handlers.onEnd();
  });
  // Ctrl-C clears a half-typed line, as a shell does; on an empty line it means leave.
  editor.on('SIGINT', () => (editor.line === '' ? handlers.onInterrupt() : clearDraft(editor)));
  // When the terminal is gone, writing to it fails (EIO, EPIPE): nobody is left to read it,
  // but the client's goodbyes must still go out.
  process.stdout.on('error', () => {});
  process.stdin.on('error', handlers.onEnd);
  if (isTty) {
    // A narrower or wider window reflows the draft; draw it again so no stale copy remains.
    process.stdout.on('resize', () => say(screen, ''));
    measureAsDrawn(editor);
    holdEcho(screen, input);
  }
  return {
    say: (text, colour, replacesTypedLine) => say(screen, text, colour, replacesTypedLine),
    prompt: (text, secret, newScreen) => showPrompt(screen, text, secret, newScreen),
    bell: () => screen.isTty && process.stdout.write('\x07'),
    close: () => {
      try {
        editor.close(); // may throw EIO if the terminal is already gone
      } catch { /* nothing left to restore */ }
    },
  };
}

/** The three steps. `text` '' prints nothing: the draft is only drawn again (after a resize). */
function say(screen: Screen, text: string, colour?: Colour, replacesTypedLine = false): void {
  const painted = colour !== undefined && screen.colour ? styleText(colour, text) : text;
  const out = process.stdout;
  if (!screen.isTty) {
    if (text !== '') out.write(painted + '\n');
    return;
  }
  if (replacesTypedLine && screen.typedRows > 0) {
    // readline left what we typed on the screen; the formatted line takes its place.
    readline.moveCursor(out, 0, -screen.typedRows);
    readline.cursorTo(out, 0);
    readline.clearScreenDown(out);
  }
  screen.typedRows = 0;
  const line = text === '' ? '' : painted + '\n';
  if (screen.secret) {
    readline.cursorTo(out, 0);
    readline.clearLine(out, 0);
    out.write(`${line}${screen.prompt}`); // the typed password stays hidden
    return;
  }
  // 1. Go up to the prompt's first row and erase prompt and draft (getCursorPos counts the rows
  // at the present width, however many the draft takes: wide characters, a wrapped line).
  readline.moveCursor(out, 0, -screen.lineEditor.getCursorPos().rows);
  readline.cursorTo(out, 0);
  readline.clearScreenDown(out);
  out.write(line); // 2. Print the message.
  // 3. readline draws prompt and draft again, leaving the cursor where it was in the draft.
  redrawBelow(screen);
}

/** Shows a prompt ('' shows none). From a pipe it is a line of its own: scripts wait for it. */
function showPrompt(screen: Screen, text: string, secret: boolean, newScreen = false): void {
  if (newScreen) dropDraft(screen);
  screen.prompt = text;
  screen.typedRows = 0; // the typed line is no longer the last thing on the screen
  if (!screen.isTty) {
    if (text !== '') process.stdout.write(text + '\n');
    return;
  }
  screen.secret = false; // let readline draw the prompt itself
  screen.lineEditor.setPrompt(text);
  // `true` keeps the cursor where it is in a half-typed line; without it readline moves the
  // cursor to the start, and the next keys typed would land in front of the text.
  screen.lineEditor.prompt(true);
  screen.secret = secret;
}

/** A half-typed line is never run on a screen it was not typed for: the user, busy typing, may
 * not have seen the screen change (a chat ended, a call came in). So it is taken off the prompt
 * and shown in a note, to be typed again if still wanted. A password is dropped unshown. */
function dropDraft(screen: Screen): void {
  const draft = screen.lineEditor.line;
  if (!screen.isTty || !draft) return;
  clearDraft(screen.lineEditor);
  if (!screen.secret) say(screen, `Not sent: "${draft}" (typed for the screen before).`, 'yellow');
}

/** Empties the line being edited (the keys Ctrl-E, Ctrl-U), and readline redraws it. */
function clearDraft(lineEditor: readline.Interface): void {
  lineEditor.write('', { ctrl: true, name: 'e' });
  lineEditor.write('', { ctrl: true, name: 'u' });
}

/** readline just handed over `line`: remember how many rows it takes on the screen. */
function noteTypedLine(screen: Screen, line: string): void {
  if (!screen.isTty) return;
  if (screen.secret) {
    process.stdout.write('\n'); // the hidden Enter did not move the cursor
    return;
  }
  // The rows of prompt and line as the terminal drew them, plus the one readline moved down to
  // (a line that exactly fills its last row gets an extra, empty one).
  screen.typedRows = displayPosition(screen.prompt + line).rows + 1;
}

/** --trace shows the protocol, but secrets have no business on a screen someone may be
 * sharing: the password is hidden, and the session token shortened to its first characters. */
export function redactSecrets(line: string): string {
  return line
    .replace(/"password":"(?:[^"\\]|\\.)*"/, '"password":"***"')
    .replace(/"token":"([^"]{6})[^"]*"/, '"token":"$1…"')
    .replace(/"(device|helloKey)":"[^"]*"/g, '"$1":"***"');
}

// === Pastes ======================================================================================
//
// Pasted text reaches a program as keys, as if typed very fast: a pasted "/quit" and its line
// break would quit. Terminals can tell a paste from typing: once a program writes ESC[?2004h
// (bracketed paste mode), each paste comes between ESC[200~ and ESC[201~. readline does not know
// these markers (Node 20 and Deno 2 alike would type the "~"), so its keys come through a stream
// that takes pastes out: a paste without a line break goes on to readline as keys, into the
// line being edited; one with line breaks goes to onPaste as lines of text, and is not echoed.

const PASTE_START = '\x1b[200~';
const PASTE_END = '\x1b[201~';
// deno-lint-ignore no-control-regex
const MARKERS = /(\x1b\[20[01]~)/; // split() keeps what the brackets match

/** The keys from stdin, pastes with line breaks taken out and handed to `onPaste`. It stands in
 * for stdin, so readline can switch the terminal to raw mode (one key at a time) through it. */
function keysWithoutPastes(onPaste: (text: string) => void): PassThrough {
  const keys = Object.assign(new PassThrough(), {
    isTTY: true,
    setRawMode: (mode: boolean) => (process.stdin.setRawMode(mode), keys),
  });
  Object.defineProperty(keys, 'isRaw', { get: () => process.stdin.isRaw });
  let pasted: string | null = null; // the paste so far, while one goes on
  let held = ''; // the end of a read that may be the start of a marker: it waits for the next
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    const text = held + chunk;
    held = text.slice(text.length - startOfMarker(text));
    for (const piece of text.slice(0, text.length - held.length).split(MARKERS)) {
      if (piece === PASTE_START) pasted = '';
      else if (piece === PASTE_END && pasted !== null) {
        if (/[\r\n]/.test(pasted)) onPaste(pasted);
        else keys.write(pasted); // one line, or part of one: the user edits it, then sends it
        pasted = null;
      } else if (pasted !== null) pasted += piece;
      else if (piece !== '') keys.write(piece);
    }
  });
  process.stdin.on('end', () => keys.end());
  process.stdout.write('\x1b[?2004h');
  process.on('exit', () => process.stdout.write('\x1b[?2004l')); // the shell expects it off
  return keys;
}

/** How many characters at the end of `text` may begin a marker (the rest comes in the next
 * read). A lone ESC is not held: it is a key of its own. */
function startOfMarker(text: string): number {
  for (let length = PASTE_START.length - 1; length >= 2; length--) {
    const end = text.slice(-length);
    if (PASTE_START.startsWith(end) || PASTE_END.startsWith(end)) return length;
  }
  return 0;
}

/** A paste's lines. Terminals send a line break as "\r"; a last line break ends the last line. */
function pastedLines(text: string): string[] {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

// === Refinements on readline's internals =========================================================
//
// The main path needs only readline's public interface. What follows makes it right in the
// corners, through parts of readline with no public name: each was checked on Node 20 and Deno 2
// (whose node:readline is a port of Node's) and says what happens on a runtime without it.

/** The parts of readline's Interface used beyond its type: the draft (`line`, `cursor`:
 * documented but typed read-only), the rows it drew below the prompt's first row last time, its
 * redraw, and its sign that a paste goes on. */
type EditableLine = {
  line: string; cursor: number; prevRows?: number; _refreshLine?: () => void;
  isCompletionEnabled?: boolean;
};

/** Step 3 of say(). readline's own count of the draft's rows (`prevRows`) is only as fresh as
 * its last redraw, so we tell it the rows we just erased. Without prevRows: readline's next
 * redraw after an edit goes up by its own, older count, and may leave a stale row. */
function redrawBelow(screen: Screen): void {
  const editable = screen.lineEditor as unknown as EditableLine;
  editable.prevRows = 0;
  screen.lineEditor.prompt(true);
  editable.prevRows = screen.lineEditor.getCursorPos().rows; // its next redraw goes up as far
}

/** When the terminal window closes, readline's attempt to leave raw mode throws EIO. The client
 * still has a logout to send, so that must not end the program. (Not an internal: a wrapper
 * around process.stdin.setRawMode, which every runtime with a TTY stdin has.) */
function surviveRawModeFailure(): void {
  const setRawMode = process.stdin.setRawMode.bind(process.stdin);
  process.stdin.setRawMode = (mode: boolean) => {
    try {
      return setRawMode(mode);
    } catch {
      return process.stdin; // the terminal is gone: nothing left to switch
    }
  };
}

/** readline measures the draft to know which rows to redraw, but it counts a ZWJ emoji sequence
 * (👨‍👩‍👧) as its parts, 6 columns, where terminals (tmux among them) draw one emoji, 2 columns.
 * Redrawing after a Backspace, it would go up into rows that are not the draft's and erase the
 * messages there. So our readline measures by graphemes, as the terminal draws them. The
 * measure is a method with no public name, a symbol described '_getDisplayPos' in Node 20's and
 * Deno 2's readline alike. Without it, readline keeps its own measure: plain text is drawn
 * right, and ZWJ emoji drafts may leave stale rows. */
function measureAsDrawn(lineEditor: readline.Interface): void {
  for (let at = Object.getPrototypeOf(lineEditor); at !== null; at = Object.getPrototypeOf(at)) {
    const symbols = Object.getOwnPropertySymbols(at);
    const measure = symbols.find((symbol) => symbol.description === '_getDisplayPos');
    if (measure === undefined) continue;
    Object.defineProperty(lineEditor, measure, {
      value: (text: string) => displayPosition(text),
    });
    return;
  }
}

/** A terminal joins the parts of an emoji like 👨‍👩‍👧 reliably only when they arrive in one
 * write. readline echoes keys one by one, and a paste (many keys at once) without measuring:
 * parts then stay apart, wider than we measure, or wrap at the end of a row, and the draft's
 * rows are no longer where readline thinks; its next redraw leaves a stale row. So while a paste
 * lasts, and for a key that joins the character before it, the echo is held back, and readline
 * then redraws the whole draft from the row it started on. Uses `_refreshLine` (the redraw) and
 * `isCompletionEnabled` (false while a paste goes on), both in Node 20 and Deno 2. Without
 * `_refreshLine` the echo is left as it is: pasted emoji may then leave a stale row. */
function holdEcho(screen: Screen, keys: NodeJS.ReadableStream): void {
  const editor = screen.lineEditor as unknown as EditableLine;
  const redraw = editor._refreshLine?.bind(editor);
  if (redraw === undefined) return;
  const release = () => {
    if (screen.heldAtRow === null) return;
    editor.prevRows = screen.heldAtRow;
    screen.heldAtRow = null;
    redraw();
  };
  let pastedInside: { line: string; cursor: number } | null = null; // see the second listener
  // prependListener: this runs before readline handles the key, the other one after.
  keys.prependListener('keypress', (text?: string, key?: { name?: string }) => {
    pastedInside = null;
    if (key?.name === 'return' || key?.name === 'enter') return release();
    const pasting = editor.isCompletionEnabled === false; // readline's sign: more keys follow
    const { line, cursor } = editor;
    if (pasting && cursor < line.length) pastedInside = { line, cursor };
    if (screen.secret) return;
    if (screen.heldAtRow === null && (pasting || joinsPrevious(editor, text ?? ''))) {
      screen.heldAtRow = screen.lineEditor.getCursorPos().rows;
    }
  });
  keys.on('keypress', (text?: string) => {
    // Node's readline adds a pasted key at the end of the line, wherever the cursor is (and moves
    // the cursor as if it had not): the key goes where the cursor was. (Deno 2's does the same;
    // a readline that inserts at the cursor never matches the test below.)
    if (pastedInside !== null && text && editor.line === pastedInside.line + text) {
      const { line, cursor } = pastedInside;
      editor.line = line.slice(0, cursor) + text + line.slice(cursor);
    }
    if (editor.isCompletionEnabled !== false) release();
  });
}

/** True when `text`, typed at the cursor, becomes part of the character before it. */
function joinsPrevious({ line, cursor }: EditableLine, text: string): boolean {
  if (cursor === 0 || text === '') return false;
  const before = line.slice(Math.max(0, cursor - 32), cursor);
  const last = [...GRAPHEMES.segment(before + text)].at(-1)?.segment ?? '';
  return last.length > text.length;
}

// === Measuring the draft =========================================================================
//
// say() goes up as many rows as the draft takes, and readline does the same when it redraws
// after an edit. Both must count rows as the terminal drew them, or a redraw leaves a stale row
// of draft or erases a message above it.

/** Where text leaves the cursor: rows below the first, and the column. Like readline's own,
 * but by graphemes, and a wide character that would not fit at a row's end moves to the next. */
function displayPosition(text: string, columns = process.stdout.columns || Infinity) {
  let [offset, rows] = [0, 0];
  for (const { segment } of GRAPHEMES.segment(stripVTControlCharacters(text))) {
    if (segment === '\n') {
      rows += Math.ceil(offset / columns) || 1;
      offset = 0;
      continue;
    }
    const width = segment === '\t' ? 8 - (offset % 8) : ZERO_WIDTH.test(segment) ? 0
      : WIDE.test(segment) ? 2 : 1;
    if (width === 2 && (offset + 1) % columns === 0) offset++;
    offset += width;
  }
  const cols = offset % columns;
  return { cols, rows: rows + (offset - cols) / columns };
}
const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
const ZERO_WIDTH = /^[\p{Cc}\p{Cf}\p{Mn}\p{Me}]+$/u;
/** What terminals draw two columns wide: emoji shown as emoji by default (not ©, ❤ or ✔, which
 * are text unless asked otherwise), flags, and the CJK blocks. */
const WIDE = new RegExp('\\p{Emoji_Presentation}|\\p{Regional_Indicator}|[\\u1100-\\u115f' +
  '\\u2e80-\\ua4cf\\uac00-\\ud7a3\\uf900-\\ufaff\\ufe30-\\ufe4f\\uff00-\\uff60\\uffe0-\\uffe6' +
  '\\u{20000}-\\u{3fffd}]', 'u');
