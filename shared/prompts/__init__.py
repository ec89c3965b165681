"""Prompt templates: the template language and the domain prompts shipped with llmbus."""

from llmbus.shared.prompts.library import DOMAIN_PROMPTS, DomainPrompt, domain_prompt
from llmbus.shared.prompts.template import (
    ChatTurn,
    RenderError,
    Template,
    TemplateError,
    Variable,
    VariableType,
    declare,
    placeholders,
    render,
)

__all__ = [
    "DOMAIN_PROMPTS",
    "ChatTurn",
    "DomainPrompt",
    "RenderError",
    "Template",
    "TemplateError",
    "Variable",
    "VariableType",
    "declare",
    "domain_prompt",
    "placeholders",
    "render",
]
