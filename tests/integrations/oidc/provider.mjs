// A real OpenID Connect provider (panva's certified oidc-provider) for the SSO tests.
//
//   node provider.mjs PORT CONFIG.json
//
// CONFIG: {"issuer", "client": {"client_id", "client_secret", "redirect_uris"},
//          "users_file", "announce_issuer"?, "forge_jwks"?}
// Users are read from users_file at every login, so a test can take someone out of a group
// between two logins: {"alice": {"password": "...", "email": "...", "groups": ["..."]}}.
// announce_issuer: the discovery document claims this issuer (tokens keep the real one).
// forge_jwks: the published keys are not the ones tokens are signed with.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const [port, configPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));

function signingKey(kid) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
}

function users() {
  return JSON.parse(readFileSync(config.users_file, 'utf8'));
}

const key = signingKey('test-key');
const provider = new Provider(config.issuer, {
  clients: [{
    ...config.client,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [key] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  async findAccount(ctx, sub) {
    const user = users()[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: user.email,
          email_verified: true,
          preferred_username: sub,
          name: sub,
          groups: user.groups,
        };
      },
    };
  },
});
provider.proxy = false;

function page(uid, message) {
  return `<!doctype html><title>Test provider</title><h1>Sign in</h1><p id="message">${message}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login" id="login" autocomplete="off"><input name="password" id="password" type="password">
<button type="submit" id="submit">Sign in</button></form>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function login(ctx, uid) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const form = await readForm(ctx.req);
  const user = users()[form.get('login')];
  if (!user || user.password !== form.get('password')) {
    ctx.type = 'html';
    ctx.body = page(uid, 'Wrong login or password.');
    return;
  }
  const accountId = form.get('login');
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  ctx.respond = false;
  await provider.interactionFinished(
    ctx.req,
    ctx.res,
    { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (match && ctx.method === 'GET' && !match[2]) {
    await provider.interactionDetails(ctx.req, ctx.res);
    ctx.type = 'html';
    ctx.body = page(match[1], '');
    return;
  }
  if (match && ctx.method === 'POST' && match[2]) {
    await login(ctx, match[1]);
    return;
  }
  await next();
  if (ctx.path === '/.well-known/openid-configuration' && config.announce_issuer) {
    ctx.body = { ...ctx.body, issuer: config.announce_issuer };
  }
  if (ctx.path === '/jwks' && config.forge_jwks) {
    const { kty, n, e } = signingKey('test-key');
    ctx.body = { keys: [{ kty, n, e, kid: 'test-key', use: 'sig', alg: 'RS256' }] };
  }
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${config.issuer}`);
});
