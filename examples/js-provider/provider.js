// An rdev provider written in JavaScript: it echoes the prompt back as a message event and
// as the final text. componentize-js turns this module into a component of the
// `rdev:provider@0.1.0` world (see README.md); WIT names become camelCase, variants are
// `{ tag, val }`, flags are objects of booleans, and `option` is `undefined` when absent.
import { emit } from 'rdev:provider/events@0.1.0';

export const agent = {
  capabilities() {
    return {
      description: 'Echoes the prompt back, written in JavaScript',
      capabilities: { streaming: true },
    };
  },
  execute(request) {
    const text = `js: ${request.prompt}`;
    emit([{ tag: 'message', val: { text, partial: false } }]);
    return {
      status: 'completed',
      exitCode: undefined,
      sessionId: undefined,
      finalText: text,
      error: undefined,
      costUsd: undefined,
      usage: undefined,
      numTurns: undefined,
      detailsJson: undefined,
    };
  },
  cancel(_request) {},
};
