// Verifies an access token against sesame's JWKS with jose, the way a resource
// server does: keys fetched from /.well-known/jwks.json, algorithm, issuer and
// audience pinned. Prints the payload as JSON, or exits 1 with the reason.
//   node verify.mjs <jwks-url> <token> <issuer> <audience>
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA'],
    issuer,
    audience,
  });
  console.log(JSON.stringify({ header: protectedHeader, payload }));
} catch (e) {
  console.error(`${e.code ?? 'error'}: ${e.message}`);
  process.exit(1);
}
