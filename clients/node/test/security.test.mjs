// SpoolClient against protected servers (test/server.mjs): TLS with a CA made for the test and
// a bearer token from an auth file; mTLS with a client certificate a principal is known by; and
// the refusals: no token, no CA, plaintext to a TLS port, a certificate of another CA.
// Certificates are made with the openssl command, as the Python client's tests make them.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { GrpcStatus, RetryPolicy, SpoolClient, SpoolError } from "../dist/index.js";
import { serverBinary, startServer } from "./server.mjs";

const TOKEN = "node-tls-token";
const CLIENT_NAME = "node-client";

const found = serverBinary();

/** Why the test cannot make certificates: a skip outside CI, a failure under CI=true. */
function opensslMissing() {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return undefined;
  } catch {
    const reason = "the openssl command is needed to make the TLS tests' certificates";
    if (process.env.CI === "true") throw new Error(reason);
    return reason;
  }
}

const skip = found.skip ?? opensslMissing();

/** A CA, a server certificate for localhost and 127.0.0.1, and a client certificate (CN = name). */
function makeCertificates(dir, caName) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", `/CN=${caName}`);
  const sign = (name, subject, extensions) => {
    openssl("req", ...key, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    writeFileSync(join(dir, `${name}.cnf`), extensions);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.cnf`);
  };
  sign("tls", "/CN=localhost", "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n");
  sign("client", `/CN=${CLIENT_NAME}`, "extendedKeyUsage = clientAuth\nbasicConstraints = CA:FALSE\n");
  return { ca: join(dir, "ca.crt"), cert: join(dir, "client.crt"), key: join(dir, "client.key") };
}

/** The SpoolError a promise rejects with. */
async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SpoolError, `not a SpoolError: ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("against servers with TLS and an auth file", { skip }, () => {
  let dir;
  let files;
  let other;
  let server;
  let https;
  /** Fails fast: a refused connection is not retried for long. */
  const quick = { connectTimeoutMs: 3_000, retry: RetryPolicy.none() };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "spool-node-tls-"));
    for (const name of ["ours", "theirs"]) mkdirSync(join(dir, name));
    files = makeCertificates(join(dir, "ours"), "Spool Node test CA");
    other = makeCertificates(join(dir, "theirs"), "Another CA");
    const digest = createHash("sha256").update(TOKEN).digest("hex");
    const authFile = join(dir, "principals.toml");
    writeFileSync(
      authFile,
      `[[principals]]\nname = "node"\ntoken_sha256 = "${digest}"\nclient_cert_name = "${CLIENT_NAME}"\n` +
        `[[principals.grants]]\nqueues = "*"\nactions = ["send", "receive", "admin"]\n`,
    );
    server = await startServer(found.binary, {
      extraArgs: [
        "--tls-cert", join(dir, "ours", "tls.crt"),
        "--tls-key", join(dir, "ours", "tls.key"),
        "--tls-client-ca", files.ca,
        "--auth-file", authFile,
      ],
    });
    https = server.endpoint.replace("http://", "https://");
  });
  after(async () => {
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("TLS with the server's CA and a token: every call works", async () => {
    // The CA as a path; the client certificate as text and bytes.
    const client = new SpoolClient(https, {
      caCert: files.ca,
      clientCert: readFileSync(files.cert, "utf8"),
      clientKey: readFileSync(files.key),
      token: TOKEN,
    });
    try {
      const name = `tls-${process.pid}`;
      await client.createQueue(name);
      await client.sendMessage(name, "over TLS");
      const received = await client.receive(name, { waitSeconds: 0 });
      assert.deepEqual(received.map((message) => new TextDecoder().decode(message.body)), ["over TLS"]);
      await client.deleteQueue(name);
    } finally {
      client.close();
    }
  });

  test("the client certificate alone names the principal (mTLS)", async () => {
    const client = new SpoolClient(https, { caCert: readFileSync(files.ca), clientCert: files.cert, clientKey: files.key });
    try {
      const name = `mtls-${process.pid}`;
      assert.equal((await client.createQueue(name)).name, name);
      await client.deleteQueue(name);
    } finally {
      client.close();
    }
  });

  test("refusals: no client certificate, a wrong token, no CA, plaintext, another CA's certificate", async () => {
    // The server wants a client certificate of its CA: without one the handshake fails.
    const noCertificate = new SpoolClient(https, { caCert: files.ca, token: TOKEN, ...quick });
    const refused = await failure(noCertificate.listQueues());
    assert.equal(refused.code, GrpcStatus.UNAVAILABLE, refused.message);
    noCertificate.close();

    // A certificate of the server's CA but a token nobody has: the token decides.
    const wrongToken = new SpoolClient(https, { caCert: files.ca, clientCert: files.cert, clientKey: files.key, token: "wrong", ...quick });
    const unknown = await failure(wrongToken.listQueues());
    assert.deepEqual([unknown.code, unknown.cmqCode], [GrpcStatus.UNAUTHENTICATED, 4100]);
    wrongToken.close();

    // The system's roots do not know the test's CA.
    const systemRoots = new SpoolClient(https, { clientCert: files.cert, clientKey: files.key, ...quick });
    assert.equal((await failure(systemRoots.listQueues())).code, GrpcStatus.UNAVAILABLE);
    systemRoots.close();

    const plaintext = new SpoolClient(server.endpoint, { token: TOKEN, ...quick });
    assert.equal((await failure(plaintext.listQueues())).code, GrpcStatus.UNAVAILABLE);
    plaintext.close();

    const stranger = new SpoolClient(https, { caCert: files.ca, clientCert: other.cert, clientKey: other.key, ...quick });
    assert.equal((await failure(stranger.listQueues())).code, GrpcStatus.UNAVAILABLE);
    stranger.close();
  });
});
