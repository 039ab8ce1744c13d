/**
 * Example client for timed in TypeScript: what a wallet or exchange developer does
 * with clients generated from the node's protos (`buf generate`).
 *
 * Against a running dev node (`timed serve --dev`) it:
 *   1. creates a new secp256k1 key and its TIME address;
 *   2. receives coins from the dev wallet (dev_wallet.json of the node's home);
 *   3. builds a payment with BuildTransaction and signs it *itself*: the digest is
 *      SHA-256("timecoin/tx/v1" 0x00 len(chain_id) chain_id body_bytes) over the exact
 *      body_bytes the node returned (docs/protocol.md), 64-byte compact low-S;
 *   4. submits it and follows SubscribeTransaction until FINAL;
 *   5. verifies offline that the block is final: the merkle proof to the header's
 *      tx_root, the header hash, and >2/3 of the validator set's power in valid
 *      precommit signatures (the commit certificate).
 *
 * Usage: tsx src/client.ts --rpc 127.0.0.1:24201 --home ~/.local/share/timed/devnet
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { sha256 } from "@noble/hashes/sha2.js";
import * as secp from "@noble/secp256k1";
import { ChainService, TransactionStatus } from "./gen/timecoin/chain/v1/chain_pb.js";
import { BlockHeaderSchema, TransactionSchema } from "./gen/timecoin/types/v1/types_pb.js";
import { WalletService } from "./gen/timecoin/wallet/v1/wallet_pb.js";

const enc = new TextEncoder();
const UNITS_PER_TIME = 100_000_000n;

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback !== undefined) return fallback;
  throw new Error(`missing --${name}`);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

// --- addresses: "TIME" + network digit + base58(payload20 + checksum4) ----------------
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
function base58(bytes: Uint8Array): string {
  let n = BigInt("0x" + (hex(bytes) || "0"));
  let s = "";
  while (n > 0n) {
    s = B58[Number(n % 58n)] + s;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    s = "1" + s;
  }
  return s;
}
function address(pubkey: Uint8Array, digit: string): string {
  const payload = sha256(pubkey).slice(0, 20);
  const checksum = sha256(sha256(concat(enc.encode(digit), payload))).slice(0, 4);
  return "TIME" + digit + base58(concat(payload, checksum));
}

// --- signing digests (docs/protocol.md) ----------------------------------------------
function chainBytes(chainId: string): Uint8Array {
  const c = enc.encode(chainId);
  return concat(Uint8Array.of(c.length), c);
}
function txSignDigest(chainId: string, bodyBytes: Uint8Array): Uint8Array {
  return sha256(concat(enc.encode("timecoin/tx/v1\0"), chainBytes(chainId), bodyBytes));
}
function precommitDigest(chainId: string, height: bigint, round: number, blockHash: Uint8Array) {
  const fixed = new Uint8Array(13);
  const dv = new DataView(fixed.buffer);
  dv.setUint8(0, 2); // VOTE_TYPE_PRECOMMIT
  dv.setBigUint64(1, height);
  dv.setUint32(9, round);
  return sha256(
    concat(enc.encode("timecoin/vote/v1\0"), chainBytes(chainId), fixed, Uint8Array.of(blockHash.length), blockHash),
  );
}

// --- merkle proof (RFC 6962 hashing, odd node promoted) -------------------------------
function verifyMerkle(leaf: Uint8Array, index: number, count: number, proof: Uint8Array[], root: Uint8Array) {
  let h = sha256(concat(Uint8Array.of(0), leaf));
  let used = 0;
  let n = count;
  while (n > 1) {
    if (index % 2 === 1 || index + 1 < n) {
      const sib = proof[used++];
      if (!sib) return false;
      h = index % 2 ? sha256(concat(Uint8Array.of(1), sib, h)) : sha256(concat(Uint8Array.of(1), h, sib));
    }
    index = Math.floor(index / 2);
    n = Math.ceil(n / 2);
  }
  return used === proof.length && equal(h, root);
}

async function main() {
  const rpc = arg("rpc");
  const home = arg("home");
  const cookie = readFileSync(arg("cookie", join(home, ".cookie")), "utf8").trim();
  const dev = JSON.parse(readFileSync(join(home, "dev_wallet.json"), "utf8"));
  const auth = { headers: { authorization: `Bearer ${cookie}` } };

  const transport = createGrpcTransport({ baseUrl: `http://${rpc}` });
  const chain = createClient(ChainService, transport);
  const wallet = createClient(WalletService, transport);

  const status = await chain.getStatus({});
  const digit = status.network === "mainnet" ? "1" : "0";
  console.log(`node ${status.chainId} height ${status.height}`);

  const devSecret = Uint8Array.from(Buffer.from(dev.secret, "hex"));
  const devPub = secp.getPublicKey(devSecret, true);
  const devAddr = address(devPub, digit);
  if (devAddr !== dev.address) throw new Error(`address derivation differs: ${devAddr} vs ${dev.address}`);

  const secret = secp.utils.randomSecretKey();
  const pub = secp.getPublicKey(secret, true);
  const addr = address(pub, digit);
  console.log(`new key address ${addr}`);

  async function pay(fromSecret: Uint8Array, fromPub: Uint8Array, from: string, to: string, amount: bigint) {
    const built = await wallet.buildTransaction({
      fromAddress: from,
      fromPubkey: fromPub,
      payments: [{ address: to, amount }],
    });
    const digest = txSignDigest(status.chainId, built.bodyBytes);
    if (!equal(digest, built.signDigest)) throw new Error("sign digest differs from the node's");
    const sig = await secp.signAsync(digest, fromSecret, { prehash: false, lowS: true });
    const tx = create(TransactionSchema, {
      bodyBytes: built.bodyBytes,
      signatures: Array.from({ length: built.inputCount }, () => sig),
    });
    const resp = await wallet.submitTransaction({ transaction: tx }, auth);
    if (!equal(resp.txid, sha256(built.bodyBytes))) throw new Error("txid is not SHA-256(body_bytes)");
    for await (const ev of chain.subscribeTransaction({ txid: resp.txid })) {
      if (ev.status === TransactionStatus.FINAL) return { txid: resp.txid, height: ev.height };
      if (ev.status === TransactionStatus.REJECTED) throw new Error(`rejected: ${ev.rejection?.message}`);
    }
    throw new Error("status stream ended before FINAL");
  }

  const funded = await pay(devSecret, devPub, devAddr, addr, 5n * UNITS_PER_TIME);
  console.log(`received 5 TIME in ${hex(funded.txid)} at height ${funded.height}`);
  const paid = await pay(secret, pub, addr, devAddr, 1n * UNITS_PER_TIME);
  console.log(`paid 1 TIME in ${hex(paid.txid)}, FINAL at height ${paid.height}`);

  // Verify finality offline from what the node returns.
  const info = await chain.getTransaction({ txid: paid.txid });
  if (!equal(sha256(info.headerBytes), info.blockHash)) throw new Error("header hash mismatch");
  const header = fromBinary(BlockHeaderSchema, info.headerBytes);
  if (!verifyMerkle(paid.txid, info.position, info.txCount, info.merkleProof, header.txRoot))
    throw new Error("merkle proof does not reach tx_root");
  const commit = info.commit!;
  if (commit.height !== info.height || !equal(commit.blockHash, info.blockHash)) throw new Error("commit is for another block");
  const vs = await chain.getValidatorSet({ height: info.height });
  const power = new Map(vs.validatorSet!.validators.map((v) => [hex(v.address), v]));
  let signed = 0n;
  const seen = new Set<string>();
  const digest = precommitDigest(status.chainId, info.height, commit.round, info.blockHash);
  for (const cs of commit.signatures) {
    const v = power.get(hex(cs.validatorAddress));
    if (!v || seen.has(hex(cs.validatorAddress))) throw new Error("commit signer unknown or repeated");
    seen.add(hex(cs.validatorAddress));
    if (!(await secp.verifyAsync(cs.signature, digest, v.pubkey, { prehash: false, lowS: true })))
      throw new Error("bad precommit signature");
    signed += v.power;
  }
  if (!(3n * signed > 2n * vs.totalPower)) throw new Error(`only ${signed}/${vs.totalPower} power signed`);
  console.log(`commit certificate verified: ${signed}/${vs.totalPower} power, merkle proof ok`);
}

main().catch((e) => {
  console.error(`error: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
