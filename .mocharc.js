// Tests by cost: unit (no subprocess, seconds), integration (real pip, Python, torch), e2e (the
// real Serverless CLI). `npm test` runs all three, cheapest first; TEST_TIERS picks some.
const tiers = (process.env.TEST_TIERS || 'unit,integration,e2e').split(',');

module.exports = {
  spec: tiers.map((tier) => `dist/test/${tier.trim()}/**/*.test.js`),
  timeout: 600000,
  slow: 5000,
  reporter: 'spec',
};
