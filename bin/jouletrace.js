#!/bin/sh
':' //; JOULETRACE_SIGIGN=$(exec grep '^SigIgn:' /proc/self/status 2>/dev/null); export JOULETRACE_SIGIGN; exec node "$0" "$@"
'use strict';
// Started as a program, this file is read by sh first: the line above (to JavaScript, a string
// and a comment) passes the signals ignored at start-up (nohup's SIGHUP; SIGINT and SIGQUIT for a
// background job of a script) to Node in JOULETRACE_SIGIGN, /proc's SigIgn mask, then runs this
// file with node. Node sets every ignored signal back to its default action as it starts, so
// only what ran before it can tell them (src/cli/ignored-signals.ts). Read by a program the shell
// execs, which gets the dispositions sh was given: bash and busybox ash ignore SIGQUIT themselves,
// and their own mask made every command run with SIGQUIT ignored. In a command substitution, so
// that no variable of the caller's is overwritten on its way to the command.
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
