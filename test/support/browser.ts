/**
 * A small browser for an identity provider's pages: cookies per origin, redirects followed, and HTML forms filled
 * in and submitted as a person would (hidden fields kept, visible ones typed). Enough for oidc-provider's login,
 * consent and device-code pages.
 */
export class FormBrowser {
  private jar = new Map<string, Map<string, string>>();
  /** Every URL visited, in order (redirects included). */
  readonly visited: string[] = [];

  private cookieHeader(url: URL): string | undefined {
    const c = this.jar.get(url.origin);
    return c && c.size ? [...c].map(([k, v]) => `${k}=${v}`).join('; ') : undefined;
  }

  private keep(url: URL, res: Response): void {
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = pair!.slice(i + 1).trim();
      const c = this.jar.get(url.origin) ?? new Map<string, string>();
      if (/expires=Thu, 01 Jan 1970/i.test(sc) || value === '') c.delete(name);
      else c.set(name, value);
      this.jar.set(url.origin, c);
    }
  }

  /** Load a URL (GET, or POST a form), following redirects; the final page's URL, status and HTML. */
  async go(href: string, form?: Record<string, string>): Promise<{ url: string; status: number; html: string }> {
    let url = new URL(href);
    let body: URLSearchParams | undefined = form ? new URLSearchParams(form) : undefined;
    for (let hops = 0; hops < 20; hops++) {
      this.visited.push(url.href);
      const headers: Record<string, string> = {};
      const cookie = this.cookieHeader(url);
      if (cookie) headers.cookie = cookie;
      if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(url, { method: body ? 'POST' : 'GET', headers, body, redirect: 'manual' });
      this.keep(url, res);
      const loc = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && loc) {
        url = new URL(loc, url);
        body = undefined;
        continue;
      }
      return { url: url.href, status: res.status, html: await res.text() };
    }
    throw new Error(`too many redirects from ${href}`);
  }

  /** Submit the page's first form: its hidden fields plus `fields` (what a person types). */
  async submit(page: { url: string; html: string }, fields: Record<string, string> = {}) {
    const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(page.html);
    if (!m) throw new Error(`no form on ${page.url}: ${page.html.slice(0, 300)}`);
    const action = /action="([^"]*)"/i.exec(m[1]!)?.[1] ?? page.url;
    const values: Record<string, string> = {};
    for (const input of m[2]!.matchAll(/<input\b([^>]*)>/gi)) {
      const name = /name="([^"]*)"/i.exec(input[1]!)?.[1];
      const value = /value="([^"]*)"/i.exec(input[1]!)?.[1];
      if (name && /type="hidden"/i.test(input[1]!)) values[name] = (value ?? '').replace(/&amp;/g, '&').replace(/&quot;/g, '"');
    }
    return this.go(new URL(action.replace(/&amp;/g, '&'), page.url).href, { ...values, ...fields });
  }

  /** Sign in on the provider's login page and approve its consent page(s), starting from `href`. */
  async signIn(href: string, login: string, password = 'any'): Promise<{ url: string; status: number; html: string }> {
    let page = await this.go(href);
    for (let step = 0; step < 8; step++) {
      if (/name="prompt" value="login"/.test(page.html)) page = await this.submit(page, { login, password });
      // Consent, the device-code confirmation, and pages a browser submits by script on load.
      else if (/name="prompt" value="consent"/.test(page.html) || /op\.deviceConfirmForm/.test(page.html) || /document\.forms\[0\]\.submit\(\)/.test(page.html)) page = await this.submit(page);
      else return page;
    }
    return page;
  }
}
