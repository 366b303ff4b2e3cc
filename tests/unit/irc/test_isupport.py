"""RPL_ISUPPORT (005) tokens and what follows from them: folding, channels, prefixes, modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.irc.isupport import ISupport
from plugins.irc.lines import parse


def _isupport(*tokens: str) -> ISupport:
    isupport = ISupport()
    isupport.update(["me", *tokens, "are supported by this server"])
    return isupport


def test_defaults_before_any_005():
    """Before 005: rfc1459 folding, CHANTYPES #&, PREFIX (ov)@+, MODES 3."""
    isupport = ISupport()
    assert isupport.fold("Nick[]\\~") == "nick{}|^"
    assert isupport.is_channel("#a") and isupport.is_channel("&a") and not isupport.is_channel("+a")
    assert isupport.prefix_modes() == (("o", "@"), ("v", "+"))
    assert isupport.modes == 3


def test_update_from_a_real_005_line():
    """A whole 005 message updates the state and keeps every token, valueless ones included."""
    message = parse(
        ":irc.example.net 005 me CASEMAPPING=ascii CHANTYPES=# EXCEPTS PREFIX=(qaohv)~&@%+ "
        "CHANMODES=beI,k,l,imnpst NETWORK=Example\\x20Net NICKLEN=30 CHANNELLEN=50 TOPICLEN=390 "
        "MODES=4 TARGMAX=PRIVMSG:4,NOTICE:4,JOIN: LINELEN=2048 :are supported by this server"
    )
    isupport = ISupport()
    isupport.update(message.params)
    assert isupport.casemapping == "ascii"
    assert isupport.chantypes == "#"
    assert isupport.network == "Example Net"
    assert (isupport.nicklen, isupport.channellen, isupport.topiclen, isupport.modes) == (30, 50, 390, 4)
    assert isupport.targmax == {"PRIVMSG": 4, "NOTICE": 4, "JOIN": None}
    assert isupport.linelen == 2048
    assert isupport.tokens["EXCEPTS"] == ""
    assert isupport.prefix_modes() == (("q", "~"), ("a", "&"), ("o", "@"), ("h", "%"), ("v", "+"))


def test_005_without_trailing_text_keeps_last_token():
    """A server that omits the trailing text does not lose its last token."""
    isupport = ISupport()
    isupport.update(["me", "CHANTYPES=#", "NETWORK=Net"])
    assert isupport.network == "Net"


@pytest.mark.parametrize(("casemapping", "name", "folded"), [
    ("ascii", "Nick[]\\~", "nick[]\\~"),
    ("rfc1459", "Nick[]\\~", "nick{}|^"),
    ("strict-rfc1459", "Nick[]\\~", "nick{}|~"),
    ("ascii", "ÉCOLE", "École"),  # ascii leaves non-ASCII alone, unlike jaraco's IRCFoldedCase
    ("rfc7613", "ÉCOLE", "école"),
    ("rfc7613", "\uff2e\uff49\uff43\uff4b", "nick"),  # fullwidth forms are width-mapped first
    ("rfc7613", "Straße", "strasse"),  # RFC 7613: Unicode Default Case Folding
    ("rfc8265", "Straße", "straße"),  # RFC 8265: toLowerCase
    ("something-new", "A[", "a{"),  # unknown: rfc1459
])
def test_fold_follows_casemapping(casemapping, name, folded):
    """fold() applies the advertised CASEMAPPING (see the module docstring for the choices)."""
    assert _isupport(f"CASEMAPPING={casemapping}").fold(name) == folded


def test_chantypes_empty_means_no_channels():
    """CHANTYPES= with no value means the server has no channels; is_channel ignores jaraco's #&+!."""
    assert not _isupport("CHANTYPES=").is_channel("#a")
    assert _isupport("CHANTYPES=#").is_channel("#a")
    assert not _isupport("CHANTYPES=#").is_channel("&a")
    assert not ISupport().is_channel("")


def test_negated_token_returns_to_default():
    """-TOKEN resets the value to its default and forgets the token."""
    isupport = _isupport("CHANTYPES=#", "NETWORK=Net")
    isupport.update(["me", "-CHANTYPES", "-NETWORK", "are supported"])
    assert isupport.chantypes == "#&"
    assert isupport.network is None
    assert "NETWORK" not in isupport.tokens


def test_malformed_prefix_is_ignored():
    """A PREFIX with unbalanced lists leaves the previous PREFIX in place (jaraco raises here)."""
    isupport = _isupport("PREFIX=(ov)@")
    assert isupport.prefix_modes() == (("o", "@"), ("v", "+"))
    assert _isupport("PREFIX=").prefix_modes() == ()


def test_prefix_helpers_and_multi_prefix_names():
    """Prefix chars map to modes both ways; NAMES entries split into rank-ordered modes and rest."""
    isupport = _isupport("PREFIX=(qaohv)~&@%+")
    assert isupport.mode_for_prefix("@") == "o"
    assert isupport.prefix_for_mode("h") == "%"
    assert isupport.mode_for_prefix("!") is None
    assert isupport.split_prefixes("+@nick!u@h") == ("ov", "nick!u@h")
    assert isupport.split_prefixes("nick") == ("", "nick")


def test_mode_takes_param_by_type():
    """CHANMODES type A/B always take a parameter, C only when set, D never; PREFIX modes always."""
    isupport = _isupport("CHANMODES=beI,k,lf,imnpst", "PREFIX=(ohv)@%+")
    assert isupport.mode_takes_param("b", adding=False)
    assert isupport.mode_takes_param("k", adding=False)
    assert isupport.mode_takes_param("l", adding=True)
    assert not isupport.mode_takes_param("l", adding=False)
    assert not isupport.mode_takes_param("m", adding=True)
    assert isupport.mode_takes_param("h", adding=False)
    assert not isupport.mode_takes_param("Z", adding=True)


def test_parse_mode_change_uses_chanmodes():
    """+eIb a b c gives each list mode its parameter (jaraco's parser gives them to b alone)."""
    isupport = _isupport("CHANMODES=beI,k,l,imnpst")
    assert isupport.parse_mode_change("+eIb", ["a", "b", "c"]) == [
        (True, "e", "a"), (True, "I", "b"), (True, "b", "c"),
    ]
    assert isupport.parse_mode_change("+o-v+l-l+m", ["x", "y", "10"]) == [
        (True, "o", "x"), (False, "v", "y"), (True, "l", "10"), (False, "l", None), (True, "m", None),
    ]


def test_parse_mode_change_tolerates_missing_params():
    """A parameter mode with no parameter left (a list query) gets None; extras are ignored."""
    isupport = ISupport()
    assert isupport.parse_mode_change("+b", []) == [(True, "b", None)]
    assert isupport.parse_mode_change("o", ["a", "extra"]) == [(True, "o", "a")]


@given(st.lists(st.text(max_size=30), max_size=10))
def test_fuzz_update_never_raises(tokens):
    """Any 005 parameters update the state without raising, and folding still works."""
    isupport = ISupport()
    isupport.update(["me", *tokens])
    assert isinstance(isupport.fold("Nick"), str)
    isupport.parse_mode_change("+ov-k", ["a", "b"])


@given(name=st.text(alphabet=st.sampled_from("aZ09[]\\~{}|^-_#é`"), max_size=12))
def test_fold_fast_path_matches_the_casemapping_table(name: str) -> None:
    """The ASCII fast path of fold gives exactly what each CASEMAPPING's table gives."""
    from plugins.irc.isupport import _FOLD_TABLES

    for casemapping in ("ascii", "rfc1459", "strict-rfc1459"):
        folded = _isupport(f"CASEMAPPING={casemapping}").fold(name)
        assert folded == name.translate(_FOLD_TABLES[casemapping]), casemapping
