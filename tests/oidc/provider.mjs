// A real OpenID Connect provider for the tests (panva/oidc-provider, OpenID Certified), on
// loopback only. Environment: PORT, CLIENTS (JSON list of client metadata) and ACCOUNTS (JSON:
// account id -> {roles: [...]}). devInteractions: a login form that accepts any password for an
// account listed in ACCOUNTS, then a consent page. Prints "ready <issuer>" when listening.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.CLIENTS || '[]');
const accounts = JSON.parse(process.env.ACCOUNTS || '{}');

const provider = new Provider(issuer, {
  clients,
  claims: { openid: ['sub'], profile: ['preferred_username', 'name', 'roles'] },
  conformIdTokenClaims: false, // profile claims in the ID token too
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ['mammogate-tests-only'] },
  async findAccount(ctx, id) {
    if (!(id in accounts)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, roles: accounts[id].roles || [] };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
