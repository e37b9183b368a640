import { TorchError } from '../util/errors';

/**
 * How the shim calls a handler: `(event, context, model)`, `(event, context)` (the model through
 * serverless_torch.model()), or `unknown` when the handler is not a plain `def` in its module (an
 * object such as an ASGI adapter's): the shim then decides from its signature at cold start.
 */
export type HandlerForm = 'event-context-model' | 'event-context' | 'unknown';

/** The parameters of a def, split at top-level commas (annotations and defaults may hold commas). */
function splitParameters(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of list) {
    if ('([{'.includes(char)) depth++;
    else if (')]}'.includes(char)) depth--;
    if (char === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  parts.push(current);
  return parts.map((part) => part.replace(/#.*$/gm, '').trim()).filter(Boolean);
}

/**
 * The form of `functionName` as defined in `source`, read from its `def` line: what the shim
 * decides at cold start with inspect.signature, said at package time. A handler that cannot take
 * the event and the context is refused.
 */
export function handlerForm(source: string, functionName: string, where: { function: string; handler: string }): HandlerForm {
  const def = new RegExp(`^(?:async\\s+)?def\\s+${functionName}\\s*\\(([^)]*(?:\\([^)]*\\)[^)]*)*)\\)`, 'm').exec(source);
  if (!def) return 'unknown';
  let positional = 0;
  let varargs = false;
  for (const parameter of splitParameters(def[1])) {
    if (parameter === '/') continue;
    if (parameter.startsWith('**')) break;
    if (parameter.startsWith('*')) {
      varargs = parameter !== '*';
      break;
    }
    positional++;
  }
  if (varargs || positional >= 3) return 'event-context-model';
  if (positional === 2) return 'event-context';
  throw new TorchError(
    'TORCH_HANDLER_SIGNATURE',
    `Function "${where.function}" has handler "${where.handler}", whose ${functionName}() takes ${positional} argument${positional === 1 ? '' : 's'}, ` +
      'but Lambda calls a handler with the event and the context. Define it as def ' +
      `${functionName}(event, context) (the model is serverless_torch.model()) or def ${functionName}(event, context, model).`,
  );
}
