/**
 * test/store.test.ts — the account-store contract, run against every store we have.
 *
 * The in-memory store is always tested. The MongoDB store is tested when MONGODB_URI names a
 * reachable server; otherwise its suite is reported as skipped (no MongoDB server can be
 * installed on our CI machines, and we never fake one).
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import { after, before, describe, test } from 'node:test';
import { createMemoryUserStore, openMongoUserStore } from '../server.ts';
import type { StoredUser, UserStore } from '../server.ts';

function user(name: string, displayName = name): StoredUser {
  return {
    name,
    displayName,
    passwordHash: randomBytes(64).toString('hex'),
    salt: randomBytes(16).toString('hex'),
  };
}

/** `skip` goes on each test, not on the describe: the test runners count skipped tests, and a
 * skipped suite would show in Node's summary as "skipped 0". */
function contract(label: string, open: () => Promise<UserStore>, skip: string | false) {
  describe(`${label} store`, () => {
    let store: UserStore;
    // Unique names per run, so a real database can be reused between runs.
    const prefix = `t${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
    if (!skip) {
      before(async () => {
        store = await open();
      });
      after(() => store?.close());
    }

    test('adds a user and finds it again, exactly as stored', { skip }, async () => {
      const alice = user(`${prefix}alice`, `${prefix}Alice`);
      assert.equal(await store.addUser(alice), 'added');
      assert.deepEqual(await store.findUser(alice.name), alice);
    });

    test('a second user with the same name is taken', { skip }, async () => {
      assert.equal(await store.addUser(user(`${prefix}bob`)), 'added');
      assert.equal(await store.addUser(user(`${prefix}bob`, `${prefix}BOB`)), 'taken');
    });

    test('an unknown name is null', { skip }, async () => {
      assert.equal(await store.findUser(`${prefix}nobody`), null);
    });

    test('twenty racing adds of one name: exactly one is added', { skip }, async () => {
      const racers = Array.from({ length: 20 }, () => store.addUser(user(`${prefix}racer`)));
      const outcomes = await Promise.all(racers);
      assert.equal(outcomes.filter((outcome) => outcome === 'added').length, 1);
    });

    test('what the store hands out cannot change what it keeps', { skip }, async () => {
      const carol = user(`${prefix}carol`);
      await store.addUser(carol);
      const found = await store.findUser(carol.name);
      found!.passwordHash = 'changed';
      assert.equal((await store.findUser(carol.name))!.passwordHash, carol.passwordHash);
    });
  });
}

contract('in-memory', async () => createMemoryUserStore(), false);

const mongodbUri = process.env.MONGODB_URI;
contract(
  'MongoDB',
  () => openMongoUserStore(mongodbUri!, 3000),
  mongodbUri ? false : 'set MONGODB_URI to run the MongoDB store tests',
);
