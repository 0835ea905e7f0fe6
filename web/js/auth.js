// API keys in the browser: when the server requires one, the page asks
// once, checks it against GET /v1/account, and keeps it in sessionStorage
// (this tab only, gone when the tab closes). A wrong key is refused with
// the server's reason and the dialog stays open.

import { Api } from './api.js';
import { sentence } from './format.js';

const STORAGE_KEY = 'kiln.apiKey';

/** Auth holds the tab's API key and the dialog that asks for it. */
export class Auth {
  constructor(dialog, storage = globalThis.sessionStorage) {
    this.dialog = dialog;
    this.storage = storage;
    this.form = dialog.querySelector('form');
    this.input = dialog.querySelector('#api-key');
    this.error = dialog.querySelector('#api-key-error');
    this.note = dialog.querySelector('#api-key-note');
    this.memory = undefined; // the key, where sessionStorage is disabled
    // The page cannot work without a key: Escape does not close the dialog.
    dialog.addEventListener('cancel', (e) => e.preventDefault());
  }

  /** The key ("" when none). */
  get key() {
    try {
      return this.storage.getItem(STORAGE_KEY) ?? this.memory ?? '';
    } catch {
      return this.memory ?? '';
    }
  }

  /** Keeps the key for the tab (in memory only where storage is disabled). */
  set key(k) {
    try {
      this.storage.setItem(STORAGE_KEY, k);
    } catch {
      this.memory = k;
    }
  }

  /** Forgets the key. */
  forget() {
    this.memory = undefined;
    try {
      this.storage.removeItem(STORAGE_KEY);
    } catch { /* storage disabled */ }
  }

  /**
   * Asks for a key until the server accepts one; resolves to the account
   * (GET /v1/account) of that key. note explains why it asks again.
   */
  ask(note = '') {
    this.note.textContent = note;
    this.note.hidden = !note;
    this.showError('');
    this.input.value = '';
    if (!this.dialog.open) this.dialog.showModal();
    this.input.focus();
    return new Promise((resolve) => {
      const onSubmit = async (e) => {
        e.preventDefault();
        const key = this.input.value.trim();
        if (!key) {
          this.showError('Paste the API key that `kiln tenants create` printed.');
          return;
        }
        const button = this.form.querySelector('button[type="submit"]');
        button.disabled = true;
        try {
          const account = await new Api(() => key).account();
          this.key = key;
          this.form.removeEventListener('submit', onSubmit);
          this.dialog.close();
          resolve(account);
        } catch (err) {
          if (err.status === 401) {
            this.showError(`That key was not accepted: ${sentence(err.message)} Check it and try again.`);
          } else {
            this.showError(`The key could not be checked: ${sentence(err.message)}`);
          }
          this.input.select();
        } finally {
          button.disabled = false;
        }
      };
      this.form.addEventListener('submit', onSubmit);
    });
  }

  showError(msg) {
    this.error.textContent = msg;
    this.error.hidden = !msg;
    if (msg) this.input.setAttribute('aria-invalid', 'true');
    else this.input.removeAttribute('aria-invalid');
  }
}
