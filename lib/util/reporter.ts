/**
 * How stages talk to the user. The plugin class maps it onto the framework's v3 logging API
 * (`log`, `progress`); tests pass a recording one.
 */
export interface Reporter {
  /** The current long step, shown as progress. */
  progress(message: string): void;
  info(message: string): void;
  notice(message: string): void;
  warning(message: string): void;
  /** Decisions explained with --verbose. */
  verbose(message: string): void;
}

export const silentReporter: Reporter = {
  progress: () => undefined,
  info: () => undefined,
  notice: () => undefined,
  warning: () => undefined,
  verbose: () => undefined,
};
