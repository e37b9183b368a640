// Tests by cost: unit (no subprocess, seconds), integration (real pip, Python, torch), e2e (the
// real Serverless CLI). `npm test` runs all three, cheapest first; TEST_TIERS picks some, and
// test files named on the command line run alone.
const tiers = (process.env.TEST_TIERS || 'unit,integration,e2e').split(',');
const namedFiles = process.argv.slice(2).some((arg) => arg.endsWith('.test.js'));

module.exports = {
  ...(namedFiles ? {} : { spec: tiers.map((tier) => `dist/test/${tier.trim()}/**/*.test.js`) }),
  timeout: 600000,
  slow: 5000,
  reporter: 'spec',
};
