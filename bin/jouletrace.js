#!/usr/bin/env node
'use strict';
require('../dist/cjs/cli/main.js')
  .main(process.argv.slice(2))
  .then(
    (code) => {
      // A failure reported meanwhile (a write to stdout that failed at once) stands.
      if (!process.exitCode) process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`jouletrace: ${err && err.message ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
