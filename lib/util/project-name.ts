/** A project name as PEP 503 compares them: "Typing_Extensions" and "typing-extensions" are one project. */
export function normaliseProjectName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}
