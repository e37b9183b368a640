import assert from 'node:assert/strict';
import { handlerForm } from '../../../lib/bundle/handler-form';

const where = { function: 'predict', handler: 'app.predict' };

describe('handler forms', () => {
  const cases: [string, string][] = [
    ['def predict(event, context, model):\n    pass', 'event-context-model'],
    ['def predict(event, context):\n    pass', 'event-context'],
    ['async def predict(event: Dict[str, Any], context) -> Dict[str, Any]:\n    pass', 'event-context'],
    ['def predict(\n    event,\n    context,\n    model=None,  # the model\n):\n    pass', 'event-context-model'],
    ['def predict(*args, **kwargs):\n    pass', 'event-context-model'],
    ['def predict(event, context, *, flag=False):\n    pass', 'event-context'],
    ['from mangum import Mangum\npredict = Mangum(app)\n', 'unknown'],
  ];
  for (const [source, form] of cases) {
    it(`${JSON.stringify(source.split('\n')[0])} is ${form}`, () => {
      assert.equal(handlerForm(source, 'predict', where), form);
    });
  }

  it('refuses a handler that cannot take the event and the context, naming both forms that work', () => {
    assert.throws(() => handlerForm('def predict(event):\n    pass', 'predict', where), {
      code: 'TORCH_HANDLER_SIGNATURE',
      message: /"predict" has handler "app\.predict", whose predict\(\) takes 1 argument, .*def predict\(event, context\).*def predict\(event, context, model\)/,
    });
  });
});
