"""The one exception type users see: a message that says what is wrong and what to do."""


class SlimdeployError(ValueError):
    """Bad input or an impossible request. The CLI prints it on one line and exits with code 2."""


class BudgetMissed(SlimdeployError):
    """A budget that could not be delivered: out of the search's reach, or measured over after every
    re-search (`compress` keeps the other budgets it met when several were asked for)."""
