"""Short Python programs whose printed output a model must predict: a task of the sharer's own pretrained ability.

Qwen2.5-Coder was trained on code and SmolLM2-135M barely was, so "what does this program print?" is a capability
the sharer has and the receiver lacks, without any LoRA planting it.

Each program is built as a tree (`Assign`, `If`, `For`, `Print` statements over `Const`, `Name`, `BinOp`, `Call`,
`Method`, `Index`, `Slice` expressions) from a seeded generator, rendered to source, and its output computed by
`run_program`, a small interpreter of that tree: the project never executes program text to learn an answer (the
tests alone compare the interpreter with CPython on generated programs). Values are ints, lowercase strings and
lists of ints; every value is kept small and every index and slice valid by construction, so no program raises.

`snippet_items(seed, split, size, difficulty)` gives the multiple-choice items of one split: the program, and four
choices (its output and three near misses of it: off by one, another variable's value, a reversed or re-cased
string, a list with one change). A program's split is a hash of its text, never of the seed or difficulty, so no
program text is in two splits of any seed or difficulty; each split is a pure function of its arguments, and a
smaller `size` gives a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from c2c_hf.data import MCItem

Value = int | str | tuple[int, ...]  # an int list is held as a tuple and printed as a list
Env = dict[str, Value]

BENCHMARK = "snippets"
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (8, 1, 1)  # tenths of all programs: a program's split is `split_of` its text
QUESTION = "What does this Python program print?\n\n```python\n{code}\n```\n\nReply with the printed output only."
MAX_INT, MAX_STR, MAX_LIST = 999, 14, 7  # bounds on every value a program holds (abs, length, length)
WORDS = ("cat", "dog", "sun", "tree", "code", "bird", "lamp", "milk", "rain", "star", "blue", "moon", "fish", "book")
NAMES = {  # variable names by type, as a person would name them
    int: ("a", "b", "c", "n", "x", "y", "k", "total", "count"),
    str: ("s", "t", "word", "name", "text"),
    tuple: ("nums", "xs", "values", "items"),
}
ARITHMETIC = ("+", "-", "*", "//", "%")
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
COMPARISONS = ("<", ">", "==", "!=")


@dataclass(frozen=True)
class Difficulty:
    """A generator setting: `statements` before the print (each an assignment, or an if/else or a for loop where
    allowed), `depth` (operations nested per expression), whether `branches` (if/else) and `loops` (for over a small
    range) may appear."""

    name: str
    statements: int
    depth: int
    branches: bool = False
    loops: bool = False


DIFFICULTIES = {
    difficulty.name: difficulty
    for difficulty in (
        Difficulty("basic", statements=1, depth=1),
        Difficulty("easy", statements=2, depth=1),
        Difficulty("medium", statements=3, depth=2, branches=True),
        Difficulty("hard", statements=4, depth=2, branches=True, loops=True),
    )
}


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Const:
    value: Value


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class BinOp:
    """`left op right`: int arithmetic (`ARITHMETIC`), str or list concatenation (`+`), str repetition (`*`)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call:
    """A builtin applied to one argument: `len`, `sum`, `max`, `min`, `sorted`, `str`."""

    func: str
    arg: Expr


@dataclass(frozen=True)
class Method:
    """A string method without arguments (`upper`, `lower`) or with one (`count`)."""

    obj: Expr
    name: str
    arg: Expr | None = None


@dataclass(frozen=True)
class Index:
    obj: Expr
    index: int


@dataclass(frozen=True)
class Slice:
    obj: Expr
    start: int | None
    stop: int | None
    step: int | None = None


Expr = Const | Name | BinOp | Call | Method | Index | Slice


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Assign:
    """`target = value`, or `target op= value` when `op` is set."""

    target: str
    value: Expr
    op: str | None = None


@dataclass(frozen=True)
class If:
    test: Compare
    body: tuple[Assign, ...]
    orelse: tuple[Assign, ...]


@dataclass(frozen=True)
class For:
    """`for var in range(count):` over a body of assignments."""

    var: str
    count: int
    body: tuple[Assign, ...]


@dataclass(frozen=True)
class Print:
    value: Expr


Statement = Assign | If | For | Print


# --------------------------------------------------------------------------- the interpreter

BUILTINS: dict[str, Callable[[Value], Value]] = {
    "len": len,
    "sum": sum,
    "max": max,
    "min": min,
    "sorted": lambda v: tuple(sorted(v)),
    "str": str,
}


def binary(op: str, left: Value, right: Value) -> Value:
    """Python's `left op right` on the values a program holds (floor division and modulo as Python defines them)."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "//":
        return left // right
    if op == "%":
        return left % right
    raise ValueError(f"unknown operator {op!r}")


def evaluate(expr: Expr, env: Env) -> Value:
    """The value of `expr` with the variables of `env`."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Name):
        return env[expr.id]
    if isinstance(expr, BinOp):
        return binary(expr.op, evaluate(expr.left, env), evaluate(expr.right, env))
    if isinstance(expr, Call):
        return BUILTINS[expr.func](evaluate(expr.arg, env))
    if isinstance(expr, Method):
        text = evaluate(expr.obj, env)
        if expr.name == "count":
            return text.count(evaluate(expr.arg, env))
        return text.upper() if expr.name == "upper" else text.lower()
    if isinstance(expr, Index):
        return evaluate(expr.obj, env)[expr.index]
    if isinstance(expr, Slice):
        return evaluate(expr.obj, env)[expr.start : expr.stop : expr.step]
    raise TypeError(f"not an expression: {expr!r}")


def compare(test: Compare, env: Env) -> bool:
    left, right = evaluate(test.left, env), evaluate(test.right, env)
    return {"<": left < right, ">": left > right, "==": left == right, "!=": left != right}[test.op]


def execute(statement: Statement, env: Env, output: list[str]) -> None:
    """Run one statement: update `env`, append printed lines to `output`."""
    if isinstance(statement, Assign):
        value = evaluate(statement.value, env)
        env[statement.target] = binary(statement.op, env[statement.target], value) if statement.op else value
    elif isinstance(statement, If):
        for inner in statement.body if compare(statement.test, env) else statement.orelse:
            execute(inner, env, output)
    elif isinstance(statement, For):
        for step in range(statement.count):
            env[statement.var] = step
            for inner in statement.body:
                execute(inner, env, output)
    elif isinstance(statement, Print):
        output.append(show(evaluate(statement.value, env)))
    else:
        raise TypeError(f"not a statement: {statement!r}")


def run_program(program: Sequence[Statement]) -> str:
    """What the program prints (lines joined by newlines, no final newline)."""
    env: Env = {}
    output: list[str] = []
    for statement in program:
        execute(statement, env, output)
    return "\n".join(output)


def show(value: Value) -> str:
    """How `print` writes a value: ints and strings as themselves, an int list as `[1, 2]`."""
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- rendering


def literal(value: Value) -> str:
    if isinstance(value, str):
        return repr(value)
    return show(value)


def render_expr(expr: Expr, parent: int = 0, right: bool = False) -> str:
    """Source text of `expr`, parenthesised only where Python's precedence needs it (`parent` is the enclosing
    operator's precedence; a right operand of equal precedence is parenthesised, as `-`, `//`, `%` require)."""
    if isinstance(expr, Const):
        return literal(expr.value)
    if isinstance(expr, Name):
        return expr.id
    if isinstance(expr, BinOp):
        own = PRECEDENCE[expr.op]
        text = f"{render_expr(expr.left, own)} {expr.op} {render_expr(expr.right, own, right=True)}"
        return f"({text})" if own < parent or (own == parent and right) else text
    if isinstance(expr, Call):
        return f"{expr.func}({render_expr(expr.arg)})"
    if isinstance(expr, Method):
        argument = render_expr(expr.arg) if expr.arg is not None else ""
        return f"{render_postfix(expr.obj)}.{expr.name}({argument})"
    if isinstance(expr, Index):
        return f"{render_postfix(expr.obj)}[{expr.index}]"
    if isinstance(expr, Slice):
        parts = ["" if p is None else str(p) for p in (expr.start, expr.stop)]
        step = "" if expr.step is None else f":{expr.step}"
        return f"{render_postfix(expr.obj)}[{parts[0]}:{parts[1]}{step}]"
    raise TypeError(f"not an expression: {expr!r}")


def render_postfix(expr: Expr) -> str:
    """An expression followed by `.method()`, `[i]` or `[i:j]`: binary operations need parentheses there."""
    return f"({render_expr(expr)})" if isinstance(expr, BinOp) else render_expr(expr)


def render_statement(statement: Statement, indent: str = "") -> list[str]:
    if isinstance(statement, Assign):
        return [f"{indent}{statement.target} {statement.op or ''}= {render_expr(statement.value)}"]
    if isinstance(statement, If):
        test = statement.test
        lines = [f"{indent}if {render_expr(test.left)} {test.op} {render_expr(test.right)}:"]
        lines += [line for inner in statement.body for line in render_statement(inner, indent + "    ")]
        lines += [f"{indent}else:"]
        return lines + [line for inner in statement.orelse for line in render_statement(inner, indent + "    ")]
    if isinstance(statement, For):
        lines = [f"{indent}for {statement.var} in range({statement.count}):"]
        return lines + [line for inner in statement.body for line in render_statement(inner, indent + "    ")]
    if isinstance(statement, Print):
        return [f"{indent}print({render_expr(statement.value)})"]
    raise TypeError(f"not a statement: {statement!r}")


def render_program(program: Sequence[Statement]) -> str:
    return "\n".join(line for statement in program for line in render_statement(statement))


# --------------------------------------------------------------------------- generation


class Rejected(Exception):
    """A drawn expression or statement left the value bounds: draw again."""


def check(value: Value) -> Value:
    """`value` if it is within the bounds every program keeps (small ints, short non-empty strings and lists)."""
    if isinstance(value, bool) or not isinstance(value, int | str | tuple):
        raise Rejected
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise Rejected
    if isinstance(value, str) and not 0 < len(value) <= MAX_STR:
        raise Rejected
    if isinstance(value, tuple) and not 0 < len(value) <= MAX_LIST:
        raise Rejected
    return value


def mentions_variable(expr: Expr) -> bool:
    """Whether `expr` reads a variable (else its value is fixed by its literals alone)."""
    if isinstance(expr, Name):
        return True
    children = [getattr(expr, name, None) for name in ("left", "right", "arg", "obj")]
    return any(mentions_variable(child) for child in children if child is not None)


def kind(value: Value) -> type:
    return tuple if isinstance(value, tuple) else type(value)


@dataclass
class Generator:
    """Draws one program of a `Difficulty` from `rng`, tracking the variables' values as it goes (so that indices,
    slices and divisors are always valid)."""

    rng: random.Random
    difficulty: Difficulty
    env: Env = field(default_factory=dict)

    def variables(self, of: type) -> list[str]:
        return [name for name, value in self.env.items() if kind(value) is of]

    def leaf(self, of: type) -> Expr:
        """A variable of type `of` (mostly, when there is one) or a literal."""
        names = self.variables(of)
        if names and self.rng.random() < 0.75:
            return Name(self.rng.choice(names))
        if of is int:
            return Const(self.rng.randint(1, 12))
        if of is str:
            return Const(self.rng.choice(WORDS))
        return Const(tuple(self.rng.randint(0, 9) for _ in range(self.rng.randint(3, 5))))

    def expr(self, of: type, depth: int) -> Expr:
        """An expression of type `of` with at most `depth` nested operations, drawn until its value is in bounds."""
        for _ in range(50):
            try:
                expr = self.draw(of, depth)
                check(evaluate(expr, self.env))
                return expr
            except (Rejected, ZeroDivisionError):
                continue
        return self.leaf(of)

    def draw(self, of: type, depth: int) -> Expr:
        if depth == 0 or self.rng.random() < 0.2:
            return self.leaf(of)
        rng, sub = self.rng, depth - 1
        if of is int:
            choice = rng.choice(("arith", "arith", "arith", "len", "reduce", "index", "count"))
            if choice == "arith":
                op = rng.choice(ARITHMETIC)
                right = Const(rng.randint(2, 5)) if op in ("//", "%") else self.expr(int, sub)
                return BinOp(op, self.expr(int, sub), right)
            if choice == "len":
                return Call("len", self.expr(rng.choice((str, tuple)), sub))
            if choice == "reduce":
                return Call(rng.choice(("sum", "max", "min")), self.expr(tuple, sub))
            if choice == "count":
                text = self.expr(str, sub)
                return Method(text, "count", Const(rng.choice(str(evaluate(text, self.env)) + "ae")))
            items = self.expr(tuple, sub)
            return Index(items, self.index(len(evaluate(items, self.env))))
        if of is str:
            choice = rng.choice(("concat", "repeat", "upper", "slice", "reverse", "char", "str"))
            if choice == "concat":
                return BinOp("+", self.expr(str, sub), self.expr(str, sub))
            if choice == "repeat":
                return BinOp("*", self.expr(str, sub), Const(rng.randint(2, 3)))
            if choice == "upper":
                return Method(self.expr(str, sub), "upper")
            if choice == "str":
                return Call("str", self.expr(int, sub))
            text = self.expr(str, sub)
            if choice == "reverse":
                return Slice(text, None, None, -1)
            if choice == "char":
                return Index(text, self.index(len(evaluate(text, self.env))))
            return self.slice(text)
        choice = rng.choice(("concat", "slice", "reverse", "sorted"))
        if choice == "concat":
            return BinOp("+", self.expr(tuple, sub), self.expr(tuple, sub))
        if choice == "sorted":
            return Call("sorted", self.expr(tuple, sub))
        items = self.expr(tuple, sub)
        return Slice(items, None, None, -1) if choice == "reverse" else self.slice(items)

    def index(self, length: int) -> int:
        """A valid index into a sequence of `length`, sometimes counted from the end."""
        position = self.rng.randrange(length)
        return position - length if self.rng.random() < 0.3 else position

    def slice(self, obj: Expr) -> Slice:
        """A non-empty `obj[i:j]`, `obj[:j]` or `obj[i:]`."""
        length = len(evaluate(obj, self.env))
        start = self.rng.randrange(length)
        stop = self.rng.randint(start + 1, length)
        form = self.rng.choice(("both", "head", "tail"))
        if form == "head" or start == 0:
            return Slice(obj, None, stop)
        return Slice(obj, start, None) if form == "tail" or stop == length else Slice(obj, start, stop)

    def target(self, of: type) -> str:
        """A variable to assign: a new one mostly, sometimes one of type `of` reassigned."""
        taken = self.variables(of)
        fresh = [name for name in NAMES[of] if name not in self.env]
        if taken and (not fresh or self.rng.random() < 0.25):
            return self.rng.choice(taken)
        return self.rng.choice(fresh)

    def assign(self, target: str, of: type) -> Assign:
        """`target = <expression of type of>`, never a bare `target = target`."""
        value = self.expr(of, self.difficulty.depth)
        while value == Name(target):
            value = self.leaf(of)
        return Assign(target, value)

    def assignment(self) -> Assign:
        of = self.rng.choice((int, int, str, tuple))
        return self.assign(self.target(of), of)

    def branch(self) -> If:
        ints = self.variables(int)
        left = Name(self.rng.choice(ints)) if ints else self.expr(int, 1)
        if self.rng.random() < 0.3:
            left, right, op = BinOp("%", left, Const(2)), Const(0), self.rng.choice(("==", "!="))
        else:
            right, op = Const(self.rng.randint(1, 12)), self.rng.choice(COMPARISONS)
        of = self.rng.choice((int, str))
        target = self.target(of)
        return If(Compare(op, left, right), (self.assign(target, of),), (self.assign(target, of),))

    def loop(self) -> list[Statement]:
        """`acc = <int>` then `for i in range(k): acc += <expression of i>` (or `-=`, `*=` on small counts)."""
        target = self.target(int)
        start = Assign(target, Const(self.rng.randint(0, 5)))
        var = "i" if "i" not in self.env else "j"
        outside, self.env = self.env, {**self.env, var: 0}  # the loop variable may appear in the step
        step = (
            BinOp(self.rng.choice(("+", "*", "-")), Name(var), self.leaf(int)) if self.rng.random() < 0.6 else Name(var)
        )
        self.env = outside
        op = self.rng.choice(("+", "+", "-"))
        return [start, For(var, self.rng.randint(2, 5), (Assign(target, step, op),))]

    def statement(self) -> list[Statement]:
        kinds = ["assign", "assign"] + ["branch"] * self.difficulty.branches + ["loop"] * self.difficulty.loops
        choice = self.rng.choice(kinds) if self.env else "assign"
        return [self.assignment()] if choice == "assign" else [self.branch()] if choice == "branch" else self.loop()

    def program(self) -> list[Statement]:
        """`difficulty.statements` statements (a loop counts as one, with its initial assignment) and a `print` of
        an expression that reads at least one variable."""
        program: list[Statement] = []
        while len([s for s in program if not isinstance(s, For)]) < self.difficulty.statements:
            for _ in range(50):
                drawn, env = self.statement(), dict(self.env)
                try:
                    output: list[str] = []
                    for statement in drawn:
                        execute(statement, env, output)
                    for value in env.values():
                        check(value)
                except (Rejected, ZeroDivisionError):
                    continue
                program += drawn
                self.env = env
                break
            else:
                raise RuntimeError("no statement within bounds after 50 draws")
        variable = self.rng.choice(list(self.env))
        of = kind(self.env[variable])
        for _ in range(50):  # the printed expression reads the program's state
            shown = self.expr(of, self.difficulty.depth)
            if mentions_variable(shown):
                return [*program, Print(shown)]
        return [*program, Print(Name(variable))]


# --------------------------------------------------------------------------- items and splits


def split_of(code: str) -> str:
    """The split a program's text belongs to, from its hash alone (the same for every seed and difficulty)."""
    bucket = int.from_bytes(hashlib.sha256(code.encode()).digest()[:8], "big") % sum(SPLIT_SHARES)
    for split, share in zip(SPLITS, SPLIT_SHARES):
        if bucket < share:
            return split
        bucket -= share
    raise AssertionError("unreachable")


def near_misses(answer: Value, others: Sequence[Value]) -> list[str]:
    """Wrong outputs a reader who slips would give, as printed text, most plausible first: for an int off by one
    or two, another variable's value, twice or minus it; for a string its reversal, other case, one character short
    or long, another variable's string; for a list reversed, sorted, one element changed or dropped."""
    same = [value for value in others if kind(value) is kind(answer) and value != answer]
    if isinstance(answer, int):
        candidates: list[Value] = [answer + 1, answer - 1, *same, answer + 2, answer - 2, 2 * answer, -answer]
        candidates += [answer + 10, answer - 10] + [answer + k for k in range(3, 12)]
    elif isinstance(answer, str):
        swapped = answer.lower() if answer != answer.lower() else answer.upper()
        candidates = [answer[::-1], swapped, answer[:-1], answer[1:], *same, answer + answer[-1], answer[0] + answer]
        candidates += [answer + suffix for suffix in ("s", "x", "e", "a", "o")]
    else:
        changed = [(*answer[:k], answer[k] + 1, *answer[k + 1 :]) for k in range(len(answer))]
        candidates = [answer[::-1], tuple(sorted(answer)), answer[:-1], answer[1:], *same, *changed]
        candidates += [(*answer, k) for k in range(10)]
    shown = show(answer)
    misses: list[str] = []
    for candidate in candidates:
        text = show(candidate)
        if text and text != shown and text.strip() == text and text not in misses:
            misses.append(text)
    return misses


def make_item(
    rng: random.Random, program: Sequence[Statement], split: str, difficulty: Difficulty, index: int
) -> MCItem:
    """The item of one program: its output and three near misses (drawn from the six most plausible), the right
    one at a position drawn from `rng`."""
    env: Env = {}
    output: list[str] = []
    for statement in program[:-1]:
        execute(statement, env, output)
    answer = evaluate(program[-1].value, env)
    distractors = rng.sample(near_misses(answer, list(env.values()))[:6], 3)
    gold = rng.randrange(4)
    choices = (*distractors[:gold], show(answer), *distractors[gold:])
    code = render_program(program)
    item_id = f"{difficulty.name}/{split}/{index}"
    return MCItem(BENCHMARK, item_id, QUESTION.format(code=code), choices, gold, subject=difficulty.name)


def snippet_programs(seed: int, split: str, size: int, difficulty: Difficulty) -> list[list[Statement]]:
    """`size` distinct programs of `split`: drawn from a stream seeded by (seed, split, difficulty), kept when their
    text hashes to `split`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
    rng = random.Random(f"snippets-{seed}-{split}-{difficulty}")
    programs: list[list[Statement]] = []
    seen: set[str] = set()
    for _ in range(400 * size + 1000):
        if len(programs) == size:
            return programs
        program = Generator(rng, difficulty).program()
        code = render_program(program)
        if code not in seen and split_of(code) == split:
            seen.add(code)
            programs.append(program)
    raise RuntimeError(f"only {len(programs)} distinct {split} programs of {difficulty} found, {size} asked")


def snippet_items(seed: int, split: str, size: int, difficulty: Difficulty | str = "easy") -> list[MCItem]:
    """The multiple-choice items of one split: a pure function of the arguments (a smaller `size` gives a prefix).
    Ids are `<difficulty>/<split>/<index>`."""
    if isinstance(difficulty, str):
        difficulty = DIFFICULTIES[difficulty]
    programs = snippet_programs(seed, split, size, difficulty)
    rng = random.Random(f"choices-{seed}-{split}-{difficulty}")
    return [make_item(rng, program, split, difficulty, index) for index, program in enumerate(programs)]


def item_program(item: MCItem) -> str:
    """The program text of an item (between its code fences)."""
    return item.question.split("```python\n", 1)[1].split("\n```", 1)[0]
