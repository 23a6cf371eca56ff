import pytest

from agents.calculator import CalculatorError, evaluate


@pytest.mark.parametrize(("expression", "value"), [
    ("17 * 23", 391), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 / 2", 3.5),
    ("2 ^ 10", 1024), ("-5 + 2", -3), ("10 // 3", 3), ("10 % 3", 1), ("1.5 * 2", 3),
])
def test_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "open('/etc/passwd')", "x + 1", "2 ** 1000000",
    "1 / 0", "[1, 2]", "'a' * 3", "9" * 300, "lambda: 1", "(1).__class__",
])
def test_refuses_everything_else(expression: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expression)
