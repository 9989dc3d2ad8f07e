"""A whole chat as one prompt (latentguard.lm.Chat): what the model reads, what text readers see."""

from __future__ import annotations

import pickle
import re

import pytest

from latentguard.common.seeding import prompt_seed
from latentguard.lm import Chat

TURNS = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."},
         {"role": "user", "content": "Another one?"}]


def test_the_model_reads_the_whole_conversation_through_its_template(tiny_lm):
    ids = tiny_lm.encode_prompt(Chat(TURNS))
    template = tiny_lm.tokenizer.apply_chat_template(
        [{"role": "system", "content": tiny_lm.system_prompt}, *TURNS] if tiny_lm.system_prompt else TURNS,
        add_generation_prompt=True, tokenize=False)
    assert ids == tiny_lm.tokenizer(template, add_special_tokens=False).input_ids


def test_a_chat_s_own_system_message_replaces_the_model_s(tiny_lm):
    before, tiny_lm.system_prompt = tiny_lm.system_prompt, "You answer in French."
    try:
        own = tiny_lm.tokenizer.decode(tiny_lm.encode_prompt(Chat([{"role": "system", "content": "Be terse."}, *TURNS])))
        default = tiny_lm.tokenizer.decode(tiny_lm.encode_prompt(Chat(TURNS)))
    finally:
        tiny_lm.system_prompt = before
    assert "Be terse." in own and "French" not in own
    assert "French" in default


def test_text_readers_see_the_last_user_message_and_chats_stay_apart():
    chat = Chat(TURNS)
    assert str(chat) == "Another one?" and type(str(chat)) is str
    other = Chat([{"role": "user", "content": "Another one?"}])
    assert chat != other and chat != "Another one?" and len({chat, other, "Another one?"}) == 3
    assert prompt_seed(0, chat) != prompt_seed(0, other) != prompt_seed(0, "Another one?")
    assert prompt_seed(0, "Another one?") == prompt_seed(0, str(chat))  # plain prompts keep their seeds


def test_a_chat_pickles_as_a_chat():
    chat = Chat([{"role": "developer", "content": "Be terse."}, *TURNS])
    back = pickle.loads(pickle.dumps(chat))
    assert isinstance(back, Chat) and back == chat and back.messages[0]["role"] == "system"


@pytest.mark.parametrize("messages,message", [
    ([], "non-empty list"),
    ([{"role": "user", "content": " "}], "messages[0].content is empty"),
    ([{"role": "robot", "content": "Hi"}], "messages[0] must be an object with a role"),
    ([*TURNS, {"role": "assistant", "content": "Pear."}], "must be the user's"),
    ([*TURNS[:1], {"role": "system", "content": "Be terse."}, *TURNS[1:]], "put the system message first"),
])
def test_a_chat_that_cannot_be_answered_names_the_fix(messages, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Chat(messages)
