// Errors a user can fix carry a code, the wrong value and the fix. The plugin class turns
// them into the framework's own error class, which prints them without a stack trace.
export class TorchError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TorchError';
    this.code = code;
  }
}

export function isTorchError(error: unknown): error is TorchError {
  return error instanceof TorchError;
}
