"""The one error a failed init raises, from the shim and from the model's download alike."""


class InitError(RuntimeError):
    """The function cannot start; `code` names the failure."""

    def __init__(self, code: str, message: str) -> None:
        # The code leads the message: Lambda's log and the invoke's errorMessage show only str(error).
        super(InitError, self).__init__("[%s] %s" % (code, message))
        self.code = code
