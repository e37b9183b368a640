import { LOADERS, MODEL_STORES } from './options';

const stringArray = { type: 'array', items: { type: 'string' } };

// The framework v3 coerces values to the first type of an anyOf that accepts them: booleans come
// first, or `false` and `true` would arrive as the strings "false" and "true".

/** A model option: a path, false, or the path with how to load it (custom.torch.model, functions.X.torch.model). */
const modelSchema = {
  anyOf: [
    { const: false },
    { type: 'string' },
    {
      type: 'object',
      properties: {
        path: { type: 'string' },
        loader: { enum: LOADERS },
        factory: { type: 'string' },
        class: { type: 'string' },
        tokenizer: { anyOf: [{ type: 'boolean' }, { type: 'string' }] },
        processor: { anyOf: [{ type: 'boolean' }, { type: 'string' }] },
        load: { type: 'string' },
        store: { enum: MODEL_STORES },
      },
      required: ['path'],
      additionalProperties: false,
    },
  ],
};

/** JSON schema registered with the framework (which only warns on v3; see validateOptions). */
export const customSchema = {
  type: 'object',
  properties: {
    model: modelSchema,
    requirements: { anyOf: [{ const: false }, { type: 'string' }] },
    // No type: the framework coerces values to the schema's type, which would turn an unquoted 2.10
    // into the string "2.1". Untyped, the number arrives as one and resolveConfig refuses it.
    torchVersion: {},
    torchIndexUrl: { type: 'string' },
    indexUrl: { type: 'string' },
    python: { type: 'string' },
    strip: {
      type: 'object',
      properties: { keep: stringArray, remove: stringArray, symbols: { type: 'boolean' } },
      additionalProperties: false,
    },
    cacheDir: { type: 'string' },
    quantize: { enum: [false, 'dynamic'] },
    sampleInput: { type: 'string' },
    allowUnsafeTorch: { type: 'boolean' },
  },
  additionalProperties: false,
};

export const functionSchema = {
  torch: { anyOf: [{ type: 'boolean' }, { type: 'object', properties: { model: modelSchema }, additionalProperties: false }] },
};

/** The options custom.torch accepts, for unknown-option errors. */
export const TOP_LEVEL_OPTIONS = Object.keys(customSchema.properties);
