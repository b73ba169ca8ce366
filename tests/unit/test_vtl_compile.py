"""Compiled templates render exactly as airspeed renders them: the stack's own templates for
any message, and every construct the compiler knows, each against airspeed on the same input.
A template with a construct it does not know is left to airspeed."""

from __future__ import annotations

import json
from typing import Any

import airspeed
import hypothesis
import pytest
from hypothesis import strategies as st

from hatchway_local import vtl
from hatchway_local.integrations import load_routes
from hatchway_local.vtl_compile import compile_template

ROUTES = load_routes("hatchway-table")


def both(template: str, body: str = "{}", context: dict[str, Any] | None = None) -> list[str]:
    """What airspeed renders, and what the compiled template renders, from the same input."""
    parsed = airspeed.Template(template)
    compiled = compile_template(parsed)
    assert compiled is not None, "the compiler left this template to airspeed"
    context = context if context is not None else {"connectionId": "c1", "requestTimeEpoch": 7}
    return [  # each its own copy of the context: a #set may change it
        str(parsed.merge(vtl.variables(body, dict(context)))),
        compiled(vtl.variables(body, dict(context))),
    ]


messages = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["response", "working", "other"]) | st.text(max_size=8),
            "id": st.text(max_size=40) | st.integers() | st.none(),
            "stored": st.text(max_size=200) | st.lists(st.integers(), max_size=3),
        },
    ).map(json.dumps),
    st.text(max_size=50),  # not JSON at all
)
contexts = st.fixed_dictionaries(
    {
        "connectionId": st.text(max_size=20),
        "requestTimeEpoch": st.integers(min_value=0, max_value=2**45),
    }
)


@pytest.mark.parametrize("route", sorted(ROUTES.services))
@hypothesis.given(body=messages, context=contexts)
def test_the_stacks_templates_render_as_airspeed_renders_them(
    route: str, body: str, context: dict[str, Any]
) -> None:
    expected, compiled = both(ROUTES.services[route].template, body, context)
    assert compiled == expected


@pytest.mark.parametrize(
    "template",
    [
        "plain text, # and $ alone, \\$escaped",
        "## a comment\nafter#* block *#end",
        "$context.connectionId $context.missing $!context.missing ${context.missing}",
        "$!{context.missing} ${context.missing|'fallback'} ${context.connectionId|'x'}",
        "$nothing $nothing.deeper $!nothing",
        "#set($a = 1 + 2 * 3)#set($b = (1 + 2) * 3)#set($c = 10 - 2 - 3)$a $b $c",
        "#set($d = 7 / 2)#set($e = 7 % 3)#set($f = 2 * 3 - 4 / 2 + 1)$d $e $f",
        "#set($g = 1 < 2 && 2 > 3 || !false)$g #set($h = 1 == 1 and 2 != 2 or true)$h",
        "#set($s = 'a\\'b\\\\c' + \"x$context.connectionId\")$s",
        "#set($n = $context.requestTimeEpoch / 1000 + 3600)$n",
        "#if($input.path('$.type') == 'a')A#elseif($input.path('$.type') == 'b')B#{else}C#end",
        "#if($context.missing)yes#end#if(!$context.missing)no#end#if(null)n#end",
        "#set($context.extra = 'v')$context.extra",
        "$input.json('$') $input.path('$.list').size() $input.path('$.name').length()",
        "$input.path('$.name').toUpperCase() $input.path('$.name').startsWith('n')",
        "$util.escapeJavaScript($input.path('$.name')) $util.base64Encode('hi')",
        "$util.urlEncode('a b&c') $util.parseJson('{\"k\": [1]}').k $context.keys()",
        "#set($t = true)#set($u = false)#set($v = 1.5)$t $u $v",
        '"$input.body"',
    ],
)
def test_each_construct_renders_as_airspeed_renders_it(template: str) -> None:
    body = json.dumps({"type": "b", "name": "n'ame\u00e9", "list": [1, 2, 3]})
    expected, compiled = both(template, body)
    assert compiled == expected


@pytest.mark.parametrize(
    "template",
    [
        "#foreach($x in [1, 2])$x#end",
        "#macro(m $x)[$x]#end#m(1)",
        "$input.path('$.list')[0]",
        "#set($l = [1, 2])$l",
        "#set($m = {})#set($m.key = 'v')$m.key",
        "#define($d)text#end$d",
    ],
)
def test_a_construct_it_does_not_know_leaves_the_template_to_airspeed(template: str) -> None:
    assert compile_template(airspeed.Template(template)) is None
    body = json.dumps({"list": [1, 2]})
    assert vtl.render(template, body, {}) == airspeed.Template(template).merge(
        vtl.variables(body, {})
    )


def test_a_render_that_raises_raises_airspeeds_own_error() -> None:
    template = "$util.base64Decode('not base64!')"
    assert compile_template(airspeed.Template(template)) is not None
    with pytest.raises(airspeed.TemplateExecutionError):
        vtl.render(template, "{}", {})
