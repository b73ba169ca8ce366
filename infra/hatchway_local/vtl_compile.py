"""Velocity templates compiled to Python closures: the tree airspeed parsed, walked once into
functions, so that a render makes no per-node dispatch, stream writes or namespace objects.

The answer route's template is rendered for every agent answer; airspeed's evaluation took
47 µs of it, this about a tenth. What a compiled template does is airspeed's evaluation step
for step: the same lookups (a name in the template's variables; on an object, its item, then
its attribute, then airspeed's added methods), the same operators and precedence, the same
order of evaluation, the same text for a reference with no value. Two guards keep it airspeed's:
a template with a node not known here is not compiled (``compile_template`` returns None), and
a render that raises is rendered again by airspeed (``vtl.render``), so that every error, and
any case this missed, is airspeed's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import airspeed

Namespace = dict[str, Any]
Calculation = Callable[[Namespace], Any]
"""A value computed in the template's namespace."""
Emission = Callable[[Namespace, list[str]], None]
"""Output appended for one node."""
Lookup = Callable[[Any, Namespace], Any]
"""A value found on an object (or in the namespace), with the namespace for its arguments."""

_ADDED_METHODS: dict[type, dict[str, Callable[..., Any]]] = airspeed.__additional_methods__
_MACROS = frozenset(airspeed._FunctionDefinition.__subclasses__())
"""What a name holds after ``#macro`` or ``#define`` (compared by type: an ABC's isinstance is
slow, and every lookup asks)."""


class Unsupported(Exception):
    """A node this compiler does not know: the template stays with airspeed."""


def compile_template(template: airspeed.Template) -> Callable[[Namespace], str] | None:
    """``template`` as one function of its variables, or None where airspeed must render it."""
    template.ensure_compiled()
    try:
        emit = _block(template.root_element.block)
    except Unsupported:
        return None

    def render(variables: Namespace) -> str:
        namespace = dict(variables)  # the template's #set never changes the caller's
        out: list[str] = []
        emit(namespace, out)
        return "".join(out)

    return render


# --- Directives and text ------------------------------------------------------------------------


def _block(block: Any) -> Emission:
    emissions: list[Emission] = []
    text: list[str] = []
    for child in block.children:
        kind = type(child)
        if kind in (airspeed.Text, airspeed.FallthroughHashText):
            text.append(child.text)
            continue
        if kind is airspeed.Comment:
            continue
        if text:
            emissions.append(_constant("".join(text)))
            text.clear()
        if kind is airspeed.FormalReference:
            emissions.append(_reference(child))
        elif kind is airspeed.SetDirective:
            emissions.append(_set(child))
        elif kind is airspeed.IfDirective:
            emissions.append(_if(child))
        else:
            raise Unsupported(kind.__name__)
    if text:
        emissions.append(_constant("".join(text)))
    if len(emissions) == 1:
        return emissions[0]
    steps = tuple(emissions)

    def emit(namespace: Namespace, out: list[str]) -> None:
        for step in steps:
            step(namespace, out)

    return emit


def _constant(text: str) -> Emission:
    def emit(namespace: Namespace, out: list[str]) -> None:
        out.append(text)

    return emit


def _reference(node: Any) -> Emission:
    """``$name...``, ``$!name`` or ``${name|alternate}`` written out (``FormalReference``)."""
    if node.expression is None:
        raise Unsupported("a reference with no name")
    find = _variable(node.expression, at_top=True)
    alternate = _value(node.alternate.expression) if node.alternate is not None else None
    quiet = bool(node.silent)
    own_text = node.my_text()

    def emit(namespace: Namespace, out: list[str]) -> None:
        value = find(namespace, namespace)
        if value is None:
            if alternate is not None:
                value = alternate(namespace)
            elif quiet:
                value = ""
            else:
                value = own_text
        out.append(str(value))

    return emit


def _set(node: Any) -> Emission:
    value = _expression(node.value)
    terms = tuple(node.terms)
    if len(terms) == 1:
        (name,) = terms

        def set_name(namespace: Namespace, out: list[str]) -> None:
            namespace[name] = value(namespace)

        return set_name

    def set_path(namespace: Namespace, out: list[str]) -> None:
        result = value(namespace)
        current: Any = namespace
        for term in terms[:-1]:
            current = current[term]
        current[terms[-1]] = result

    return set_path


def _if(node: Any) -> Emission:
    branches = [(_condition(node.condition), _block(node.block))]
    branches += [(_condition(other.condition), _block(other.block)) for other in node.elseifs]
    otherwise = _block(node.else_block.block) if hasattr(node.else_block, "block") else None

    def emit(namespace: Namespace, out: list[str]) -> None:
        for condition, block in branches:
            if condition(namespace):
                block(namespace, out)
                return
        if otherwise is not None:
            otherwise(namespace, out)

    return emit


def _condition(condition: Any) -> Calculation:
    return _bound_expression(condition, "a condition that is not an expression")


def _bound_expression(node: Any, otherwise: str) -> Calculation:
    """The ``Expression`` a ``Condition`` or ``ParenthesizedExpression`` evaluates: their
    ``calculate`` is its own, bound (airspeed keeps no other reference to it)."""
    expression = getattr(node.calculate, "__self__", None)
    if type(expression) is not airspeed.Expression:
        raise Unsupported(otherwise)
    return _expression(expression)


# --- Expressions ----------------------------------------------------------------------------------


def _expression(node: Any) -> Calculation:
    """``Expression``: values and binary operators, reduced by airspeed's operator-precedence
    algorithm. The order it computes the values in is fixed by the operators alone, so it is
    worked out here once: a program of steps over numbered slots."""
    terms = node.expression
    values: list[Calculation] = [_value(terms[0])]
    """By slot: a value's calculation, or ``_no_value`` in an operator result's slot."""
    if len(terms) == 1:
        return values[0]
    program: list[Callable[[Namespace, list[Any]], None]] = []
    pending: set[int] = {0}
    stack: list[int] = [0]
    operators: list[Any] = []

    def compute(slot: int) -> None:
        if slot in pending:  # a value, computed when an operator first takes it
            pending.discard(slot)
            calculate = values[slot]

            def step(namespace: Namespace, computed: list[Any]) -> None:
                computed[slot] = calculate(namespace)

            program.append(step)

    def reduce() -> None:
        right, left = stack.pop(), stack.pop()
        compute(right)  # airspeed takes the second value first
        compute(left)
        apply, result = operators.pop().apply_to, len(values)
        values.append(_no_value)

        def step(namespace: Namespace, computed: list[Any]) -> None:
            computed[result] = apply(computed[left], computed[right])

        program.append(step)
        stack.append(result)

    rest = list(terms[1:])
    while rest:
        if not operators or rest[0].greater_precedence_than(operators[-1]):
            operators.append(rest[0])
            pending.add(len(values))
            stack.append(len(values))
            values.append(_value(rest[1]))
            rest = rest[2:]
        else:
            reduce()
    while operators:
        reduce()
    (last,) = stack
    compute(last)
    steps, size = tuple(program), len(values)

    def calculate(namespace: Namespace) -> Any:
        computed: list[Any] = [None] * size
        for step in steps:
            step(namespace, computed)
        return computed[last]

    return calculate


def _no_value(namespace: Namespace) -> Any:
    """``null``; and what stands in an operator result's slot, which is never called."""
    return None


def _value(node: Any) -> Calculation:
    """A ``Value``: what its one element calculates."""
    if type(node) is not airspeed.Value:
        raise Unsupported(type(node).__name__)
    return _element(node.expression)


def _element(node: Any) -> Calculation:
    kind = type(node)
    if kind in (
        airspeed.IntegerLiteral,
        airspeed.FloatingPointLiteral,
        airspeed.BooleanLiteral,
        airspeed.StringLiteral,
    ):
        return functools.partial(_literal, node.value)
    if kind is airspeed.NullLiteral:
        return _no_value
    if kind is airspeed.FormalReference:  # as a value: no alternate, no own text
        if node.expression is None:
            raise Unsupported("a reference with no name")
        find = _variable(node.expression, at_top=True)
        return lambda namespace: find(namespace, namespace)
    if kind is airspeed.InterpolatedStringLiteral:
        block = _block(node.block)

        def interpolate(namespace: Namespace) -> str:
            out: list[str] = []
            block(namespace, out)
            return "".join(out)

        return interpolate
    if kind is airspeed.ParenthesizedExpression:
        return _bound_expression(node, "a parenthesis without an expression")
    if kind is airspeed.UnaryOperatorValue:
        operand, operation = _value(node.value), node.op
        return lambda namespace: operation(operand(namespace))
    raise Unsupported(kind.__name__)


def _literal(value: Any, namespace: Namespace) -> Any:
    return value


# --- References: names, calls, properties -------------------------------------------------------


def _variable(node: Any, at_top: bool) -> Lookup:
    """``VariableExpression``: a name or call, then what follows its dot, if anything.
    ``at_top``: looked up in the template's variables, not on an object."""
    if type(node) is not airspeed.VariableExpression:
        raise Unsupported(type(node).__name__)
    first = _name_or_call(node.part, at_top)
    if node.subexpression is None:
        return first
    sub = node.subexpression
    if type(sub) is not airspeed.SubExpression or type(sub.expression) is airspeed.ArrayIndex:
        raise Unsupported("an index after a reference")
    then = _variable(sub.expression, at_top=False)

    def find(current: Any, namespace: Namespace) -> Any:
        return then(first(current, namespace), namespace)

    return find


def _name_or_call(node: Any, at_top: bool) -> Lookup:
    if type(node) is not airspeed.NameOrCall or node.index is not None:
        raise Unsupported("an index on a name")
    name = node.name
    arguments: tuple[Calculation, ...] | None = None
    if node.parameters is not None:
        values = node.parameters.values
        listed = getattr(values, "values", [])  # _EmptyValues has none
        arguments = tuple(_value(value) for value in listed)

    def find(current: Any, namespace: Namespace) -> Any:
        # At the top, airspeed's LocalNamespace: its own names and nothing else.
        result = current.get(name) if at_top else _on_object(current, name)
        if result is None:
            return None
        if type(result) in _MACROS:
            raise Unsupported("a macro")  # vtl.render has airspeed render it
        if arguments is not None:
            result = result(*[argument(namespace) for argument in arguments])
        return result

    return find


def _on_object(current: Any, name: str) -> Any:
    """``current.name`` as airspeed finds it: an item, else an attribute, else one of the
    methods airspeed adds to strings, lists and dicts (Java's ``length()``, ``size()``...)."""
    # try/except, not contextlib.suppress: a context manager per lookup cost a third more.
    try:
        result = current[name]
    except (KeyError, TypeError, AttributeError):
        result = None
    if result is None:
        result = getattr(current, name, None)
    if result is None:
        methods = _ADDED_METHODS.get(current.__class__)
        if methods and name in methods:
            method = methods[name]
            result = functools.partial(method, current)
    return result
