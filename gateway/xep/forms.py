"""XEP-0004: Data Forms, the subset the gateway needs (forms out, submissions in)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from twisted.words.xish import domish

from gateway.plugin import FormField
from gateway.stanzas import xml_safe

NS_DATA_FORMS = "jabber:x:data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Form:
    """A form to send (``type='form'`` or ``'result'``)."""

    type: str = "form"
    title: str = ""
    instructions: str = ""
    form_type: str = ""
    """The hidden FORM_TYPE field (XEP-0068)."""
    fields: tuple[FormField, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)

    def to_element(self) -> domish.Element:
        form = domish.Element((NS_DATA_FORMS, "x"))
        form["type"] = self.type
        if self.title:
            form.addElement("title", content=self.title)
        if self.instructions:
            form.addElement("instructions", content=self.instructions)
        if self.form_type:
            hidden = form.addElement("field")
            hidden["var"] = "FORM_TYPE"
            hidden["type"] = "hidden"
            hidden.addElement("value", content=self.form_type)
        for spec in self.fields:
            element = form.addElement("field")
            element["var"] = spec.var
            element["type"] = spec.type
            element["label"] = spec.label
            if spec.description:
                element.addElement("desc", content=spec.description)
            if spec.required:
                element.addElement("required")
            for option in spec.options:
                element.addElement("option").addElement("value", content=option)
            value = self.values.get(spec.var, spec.default)
            if value and not spec.secret:
                for line in value.split("\n") if spec.type == "text-multi" else [value]:
                    element.addElement("value", content=xml_safe(line))
        return form


def find_form(parent: domish.Element) -> domish.Element | None:
    for child in parent.elements(NS_DATA_FORMS, "x"):
        return child
    return None


def submitted_values(form: domish.Element) -> dict[str, str]:
    """The values of a submitted form; multi-valued fields are joined with newlines."""
    values: dict[str, str] = {}
    for element in form.elements(NS_DATA_FORMS, "field"):
        var = element.getAttribute("var")
        if not var:
            continue
        values[var] = "\n".join(str(v) for v in element.elements(NS_DATA_FORMS, "value"))
    return values


def result_form(fields: Iterable[tuple[str, str, str]], *, form_type: str = "") -> domish.Element:
    """A ``result`` form of (var, label, value) triples, for command answers."""
    form = domish.Element((NS_DATA_FORMS, "x"))
    form["type"] = "result"
    if form_type:
        hidden = form.addElement("field")
        hidden["var"] = "FORM_TYPE"
        hidden["type"] = "hidden"
        hidden.addElement("value", content=form_type)
    for var, label, value in fields:
        element = form.addElement("field")
        element["var"] = var
        element["label"] = label
        element.addElement("value", content=xml_safe(value))
    return form
