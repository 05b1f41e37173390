#!/bin/sh
':' //; { while read -r k v; do [ "$k" = SigIgn: ] && break; done </proc/self/status; } 2>/dev/null; export JOULETRACE_SIGIGN="$v"; exec node "$0" "$@"
'use strict';
// Started as a program, this file is read by sh first: the line above (to JavaScript, a string
// and a comment) passes the signals ignored at start-up (nohup's SIGHUP; SIGINT and SIGQUIT for a
// background job of a script) to Node in JOULETRACE_SIGIGN, /proc's SigIgn mask, then runs this
// file with node. Node sets every ignored signal back to its default action as it starts, so
// only what ran before it can tell them (src/cli/ignored-signals.ts).
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
