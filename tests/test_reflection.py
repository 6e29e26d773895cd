"""Self-reflection: prompts, alternatives, template rationales, filters, and the self/http generators."""

import dataclasses
import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ee_jax.config import PromptConfig, ReflectConfig
from ee_jax.envs import make_env
from ee_jax.experience.reflect.filters import FILTER_REASONS, check_reflection, named_actions
from ee_jax.experience.reflect.generators import (
    GroundedGenerator,
    HttpGenerator,
    OracleTemplateGenerator,
    ReflectionGenerator,
    SelfGenerator,
    make_generator,
)
from ee_jax.experience.reflect.grounded import grounded_rationale
from ee_jax.experience.reflect.oracle_rationale import oracle_template_rationale
from ee_jax.experience.reflect.reflection import (
    OTHERS_HEADER,
    ReflectionCase,
    case_seed,
    choose_alternatives,
    reflection_messages,
)
from ee_jax.records.schema import Outcome, State, Step

# Open action space (tools): a valid read, malformed JSON, a call that fails, another valid read.
TOOL_ALTERNATIVES = ('{"name": "ls", "arguments": {}}', "list the files",
                     '{"name": "cd", "arguments": {"folder": "nowhere"}}', '{"name": "pwd", "arguments": {}}')


def _outcome(env, action: str) -> Outcome:
    r = env.step(action)
    return Outcome(action, r.observation, r.reward, r.done, bool(r.info["valid"]), bool(r.info["won"]),
                   float(r.info["score"]))


def real_cases(name: str, n_tasks: int = 2, difficulties=(1, 2, 3), k: int = 3, tries: int = 5) -> list:
    """Reflection cases along oracle episodes: at every expert state, ``tries`` non-expert actions
    (admissible ones, or fixed calls for open action spaces) run from a snapshot, ``k`` of them chosen."""
    env = make_env(name)
    cases = []
    for d in difficulties:
        for task in env.make_tasks("train", n_tasks, difficulty=d):
            obs, history, rng = env.reset(task), [], random.Random(task.seed)
            while not env.done:
                expert = env.oracle_action()
                if expert is None:
                    break
                adm = env.admissible_actions()
                state = State(task.goal, tuple(history), obs, None if adm is None else tuple(adm))
                snap = env.snapshot()
                pool = [a for a in (adm if adm is not None else TOOL_ALTERNATIVES) if a != expert]
                outs = []
                for a in rng.sample(pool, min(tries, len(pool))):
                    outs.append(_outcome(env, a))
                    env.restore(snap)
                exp = _outcome(env, expert)
                cases.append(ReflectionCase(state, exp, choose_alternatives(exp, outs, k, seed=len(cases)), name))
                history.append(Step(expert, exp.observation))
                obs = exp.observation
    return cases


def _case(expert="go to cabinet 1", alts=("go to cabinet 10", "open drawer 2"), obs="You are in the kitchen.",
          goal="put a clean mug in cabinet 1", env="household") -> ReflectionCase:
    state = State(goal, (Step("look", "You are in the kitchen. You see a cabinet 1."),), obs, None)
    out = Outcome(expert, f"You arrive at {expert.split()[-2]} {expert.split()[-1]}. You see a mug 1.", 0.0,
                  False, True)
    return ReflectionCase(state, out, [Outcome(a, f"Nothing happens after {a}.", 0.0, False, False) for a in alts], env)


# ------------------------------------------------------------------------------------------- prompt
def test_prompt_structure_and_neutral_labels():
    case = next(c for c in real_cases("shop", 1, (1,)) if len(c.alternatives) == 3 and c.state.history)
    system, user = reflection_messages(case, PromptConfig(), max_words=300)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    # the situation: the same pieces the policy reads
    assert f"Task: {case.state.goal}" in text and "Current observation:" in text
    assert f"> {case.state.history[-1].action}" in text
    # the taken action with its outcome, then each alternative with its outcome, as unnumbered bullets
    assert f"`{case.expert.action}`, which leads to: {json.dumps(case.expert.observation)}" in text
    after = text.split(OTHERS_HEADER, 1)[1]
    for alt in case.alternatives:
        assert f"- `{alt.action}`, which leads to: {json.dumps(alt.observation)}" in after
    assert text.count("\n- `") == 3
    assert "at most 300 words" in text and text.rstrip().endswith(f"`{case.expert.action}`.")
    for label in (r"\bexpert", r"\baction\s*\d", r"\boption\s*[A-Z0-9]\b", r"\balternative\s*\d", r"^\s*\d+[.)]",
                  r"^\s*[A-Z][.)]"):
        assert not re.search(label, text + system["content"], re.IGNORECASE | re.MULTILINE), label


def test_prompt_clips_long_observations_and_marks_outcomes_only_when_asked():
    long = "You see " + ", ".join(f"a box {i}" for i in range(500)) + "."
    case = ReflectionCase(State("find the key", (), long, None),
                          Outcome("take key 1", "You win.", 1.0, True, True, won=True),
                          [Outcome("jump", "Nothing happens.", 0.0, False, False),
                           Outcome("quit", "You gave up.", 0.0, True, True),
                           Outcome("dig", "You dig a hole.", 0.5, False, True)], "x")
    # the paper's prompt: observations only, no hidden verdicts
    plain = reflection_messages(case, PromptConfig(max_observation_chars=200))[1]["content"]
    assert "[...]" in plain and len(plain) < 2000
    for note in ("task was completed", "did not accept", "episode ended", "progress"):
        assert note not in plain
    # experience.reflect.show_reward=true (privileged): the environment's verdicts are added
    text = reflection_messages(case, PromptConfig(max_observation_chars=200), show_reward=True)[1]["content"]
    assert "(the task was completed)" in text and "(the environment did not accept this action)" in text
    assert "(progress +0.5)" in text
    assert "(the episode ended)" in text


def test_choose_alternatives_deterministic_distinct_never_expert():
    expert = Outcome("go to cabinet 1", "You arrive at cabinet 1.", 0.0, False, True)
    cands = [Outcome("Go  to cabinet 1", "You arrive at cabinet 1.", 0.0, False, True),  # the expert, respelled
             Outcome("go to cabinet 2", "You arrive at cabinet 2.", 0.0, False, True),
             Outcome("go to cabinet 2", "You arrive at cabinet 2.", 0.0, False, True),  # duplicate action
             Outcome("look", "You arrive at cabinet 1.", 0.0, False, True),  # same outcome as the expert
             Outcome("jump", "Nothing happens.", 0.0, False, False),
             Outcome("dance", "Nothing happens.", 0.0, False, False)]
    got = choose_alternatives(expert, cands, 2, seed=3)
    assert got == choose_alternatives(expert, list(reversed(cands)), 2, seed=3)  # order of candidates is irrelevant
    assert len(got) == 2 and len({o.observation for o in got}) == 2  # distinct outcomes first
    assert all(o.observation != expert.observation for o in got)
    everything = choose_alternatives(expert, cands, 10, seed=3)
    assert sorted(o.action for o in everything) == ["dance", "go to cabinet 2", "jump", "look"]
    assert everything[-1].action == "look"  # the expert's own outcome comes last
    seen = {tuple(o.action for o in choose_alternatives(expert, cands, 2, seed=s)) for s in range(20)}
    assert len(seen) > 1  # the seed matters
    assert choose_alternatives(expert, cands, 0, seed=1) == []


# ------------------------------------------------------------------------------------------- grounded
@pytest.mark.parametrize("env", ["coin", "household", "shop", "travel", "tools"])
def test_grounded_passes_filters_names_the_action_once_and_varies(env):
    cases = real_cases(env)
    gen, cfg = GroundedGenerator(), ReflectConfig()
    texts = gen.generate(cases, seed=0)
    assert texts == gen.generate(cases, seed=1) == [grounded_rationale(c) for c in cases]  # deterministic
    assert gen.errors == 0 and gen.name == "grounded" and isinstance(gen, ReflectionGenerator)
    for case, text in zip(cases, texts):
        assert check_reflection(text, case, cfg) == ("kept", ""), text
        shown = f"`{case.expert.action}`"
        assert text.count(shown) == 1 and text.rstrip(".").endswith(shown), text  # once, at the end
        for alt in case.alternatives:
            assert f"`{alt.action}`" in text
    # no single sentence frame: openings and conclusions vary between cases
    assert len({t.split(":")[0].split('"')[0] for t in texts}) >= 3
    assert len({t.rsplit("`", 2)[0].rsplit(". ", 1)[-1] for t in texts}) >= 3


def _hide(o: Outcome, rng: random.Random) -> Outcome:
    """``o`` with every hidden field (reward, done, valid, won, score) redrawn; action and observation kept."""
    return dataclasses.replace(o, reward=rng.choice([-1.0, 0.0, 0.3, 1.0]), done=rng.random() < 0.5,
                               valid=rng.random() < 0.5, won=rng.random() < 0.5, score=rng.random())


def test_grounded_sees_no_hidden_reward_flags_or_environment_name():
    rng = random.Random(0)
    for env in ("coin", "household", "shop", "travel", "tools"):
        for case in real_cases(env, 1, (1, 2)):
            other = ReflectionCase(case.state, _hide(case.expert, rng), [_hide(o, rng) for o in case.alternatives],
                                   "some-other-env")
            assert grounded_rationale(other) == grounded_rationale(case)
    # and the oracle template does read them: the same two cases give different text
    case = real_cases("household", 1, (1,))[0]
    won = dataclasses.replace(case.expert, reward=1.0, won=True, done=True)
    assert oracle_template_rationale(case) != oracle_template_rationale(dataclasses.replace(case, expert=won))


def _ee_imports(module: str) -> set[str]:
    """Every ee_jax module ``module`` imports, transitively (top-level and inside functions), from the source."""
    import ast
    import importlib.util

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            todo += [n for n in names if n.startswith("ee_jax")]
    return seen


def test_grounded_reaches_no_environment_code_or_hidden_fields():
    import ast
    import inspect

    import ee_jax.experience.reflect.grounded as grounded

    reached = _ee_imports("ee_jax.experience.reflect.grounded")
    assert "ee_jax.experience.reflect.oracle_rationale" not in reached
    # config validation reaches the environment protocol and registry (names, not worlds); no world's code
    assert not [m for m in reached if m.startswith("ee_jax.envs") and m not in ("ee_jax.envs.base",
                                                                              "ee_jax.envs.registry")], reached
    # the check can fail:
    assert "ee_jax.experience.reflect.oracle_rationale" in _ee_imports("ee_jax.experience.reflect.generators")
    used = {n.attr for n in ast.walk(ast.parse(inspect.getsource(grounded))) if isinstance(n, ast.Attribute)}
    assert not used & {"reward", "won", "valid", "done", "score", "env"}, used & {"reward", "won", "valid", "done"}


# ------------------------------------------------------------------------------------------- template
@pytest.mark.parametrize("env", ["coin", "household", "shop", "travel", "tools"])
def test_template_rationales_pass_filters(env):
    cases = real_cases(env)
    assert len(cases) >= 10
    cfg = ReflectConfig()
    gen = OracleTemplateGenerator()
    texts = gen.generate(cases, seed=0)
    assert texts == gen.generate(cases, seed=1) == [oracle_template_rationale(c) for c in cases]  # deterministic
    assert gen.errors == 0
    for case, text in zip(cases, texts):
        assert check_reflection(text, case, cfg) == ("kept", ""), text
        assert text.endswith(f"So I will `{case.expert.action}`.")
        assert cfg.min_words <= len(text.split()) <= 260
        for alt in case.alternatives:
            assert f"`{alt.action}`" in text
    assert gen.name == "oracle_template" and isinstance(gen, ReflectionGenerator)


def test_template_says_why_with_the_environment_feedback():
    # shop: a product over the goal's budget, reached from the results page of the expert's search
    env = make_env("shop")
    task = env.make_tasks("train", 1, difficulty=1)[0]
    env.reset(task)
    first = env.oracle_action()
    obs = env.step(first).observation
    state = State(task.goal, (Step(first, obs),), obs, tuple(env.admissible_actions()))
    snap = env.snapshot()
    outs = []
    for a in env.admissible_actions():
        outs.append(_outcome(env, a))
        env.restore(snap)
    expert = _outcome(env, env.oracle_action())
    budget = task.param("budget")
    priced = [(o, float(m.group(1))) for o in outs if (m := re.search(r"Price: \$(\d+(?:\.\d+)?)", o.observation))]
    over = [(o, p) for o, p in priced if p >= budget]
    assert over, "the first results page of difficulty 1 lists an over-budget product"
    text = oracle_template_rationale(ReflectionCase(state, expert, [over[0][0]], "shop"))
    price = over[0][1]
    money = lambda x: f"${x:.2f}" if x != int(x) else f"${int(x)}"
    assert f"that costs {money(price)}, more than the {money(budget)} budget" in text
    # travel: spending over the budget (crafted), the booking notes; household: the goal object; tools: the request
    state = State("Plan a trip. Budget $660.", (), "Restaurants in Redwater (meals on days 1-3): ...", None)
    over = Outcome("set day 1 dinner R3", "Set day 1 dinner: R3 Italian in Redwater, $80 for 2. You have spent $700 "
                   "of your $660 budget (over by $40). Empty: lunch 2.", 0.0, False, True)
    cheap = Outcome("set day 1 dinner R6", "Set day 1 dinner: R6 Thai in Redwater, $30 for 2. You have spent $650 "
                    "of your $660 budget. Empty: lunch 2.", 0.0, False, True)
    text = oracle_template_rationale(ReflectionCase(state, cheap, [over], "travel"))
    assert "that takes the spending to $700, over the $660 budget" in text and "over by" not in text
    assert "that keeps the spending at $650 of the $660 budget" in text
    travel = [oracle_template_rationale(c) for c in real_cases("travel", 2, (1,))]
    assert any("the booking system warns that" in t for t in travel)
    assert any(re.search(r"that costs more: \$\d+ spent instead of \$\d+", t) for t in travel)
    household = [oracle_template_rationale(c) for c in real_cases("household", 1, (1,))]
    assert any("does not get me closer to the bread" in t for t in household)
    tools = oracle_template_rationale(real_cases("tools", 1, (1,))[0])
    assert "Right now I am working on request 1/2" in tools and "would not be accepted here" in tools


# ------------------------------------------------------------------------------------------- filters
GOOD = ("The mug has to end up in cabinet 1, so I should head there. Opening drawer 2 did nothing useful, and "
        "cabinet 10 is not where the task points. So I will go to cabinet 1.")


def test_filters_keep_a_good_reflection_and_name_each_reason():
    case, cfg = _case(), ReflectConfig(min_words=8, max_words=60)
    assert check_reflection(GOOD, case, cfg) == ("kept", "")
    tail = " So I will go to cabinet 1."
    crafted = {
        "empty": "  \n ",
        "too_short": "So I will go to cabinet 1.",
        "too_long": " ".join(f"word{i}" for i in range(80)) + tail,
        "leaked_label": "The expert action is clearly better than the rest here." + tail,
        "repetitive": "I need the mug in the cabinet. I need the mug in the cabinet. It is close." + tail,
        "contradicts_expert": "Cabinet 1 looks promising but the other one is better. So I will go to cabinet 10.",
        "no_conclusion": "Cabinet 1 is where the mug goes, and the drawer did nothing. So I will keep going.",
    }
    assert set(crafted) == set(FILTER_REASONS)
    for reason, text in crafted.items():
        assert check_reflection(text, case, cfg) == ("dropped", reason), reason


@pytest.mark.parametrize("text", [
    "Action 1 leads nowhere, unlike the other one, which helps a lot.",
    "Option B looks worse than what I have in mind for this task.",
    "The chosen action moves me toward the cabinet where the mug goes.",
    "Alternative 2 does nothing for me, the drawer is irrelevant here.",
    "I compare {expert_action} with the rest and it wins clearly here.",
    "The action that was taken moves me toward the cabinet with the mug.",
])
def test_leaked_labels(text):
    assert check_reflection(text + " So I will go to cabinet 1.", _case(), ReflectConfig()) == ("dropped",
                                                                                                "leaked_label")


def test_label_words_that_the_environment_uses_are_not_leaks():
    # "option" in shop text, and a label-like phrase the observation itself contains
    case = _case(obs="A sign says: option 2 is closed today. The size option m is on sale.")
    text = ("The sign says option 2 is closed today, and the size option m does not matter for the mug. "
            "So I will go to cabinet 1.")
    assert check_reflection(text, case, ReflectConfig()) == ("kept", "")


def test_repetition_rules():
    case, cfg = _case(), ReflectConfig(max_words=400)
    loop = "I think that no no no no it is fine to go there now." + " So I will go to cabinet 1."
    assert check_reflection(loop, case, cfg) == ("dropped", "repetitive")
    ngrams = ("First I will walk to the kitchen and then " * 4 + "look around. So I will go to cabinet 1.")
    assert check_reflection(ngrams, case, cfg) == ("dropped", "repetitive")
    # mentioning an action several times, even a long one, is not a loop
    many = ("First, go to cabinet 1 puts me next to the mug. Since go to cabinet 1 is the shortest way, and the "
            "drawer did nothing, go to cabinet 1 wins. So I will go to cabinet 1.")
    assert check_reflection(many, case, cfg) == ("kept", "")
    # a sentence the environment itself says twice may be said twice, not more
    locked = _case(alts=("open drawer 2", "open drawer 3"))
    locked = dataclasses.replace(locked, alternatives=[dataclasses.replace(o, observation="The drawer is locked now.")
                                                       for o in locked.alternatives])
    text = ("The drawer is locked now. That is what drawer 2 said. The drawer is locked now. Drawer 3 said so too. "
            "So I will go to cabinet 1.")
    assert check_reflection(text, locked, cfg) == ("kept", "")
    assert check_reflection(text, case, cfg) == ("dropped", "repetitive")
    thrice = text.replace("Drawer 3", "The drawer is locked now. Drawer 3")
    assert check_reflection(thrice, locked, cfg) == ("dropped", "repetitive")


def test_conclusion_matching():
    acts = ["go to cabinet 1", "go to cabinet 10", "look", "look at mug 1"]
    assert named_actions("So I will go to cabinet 10.", acts) == {"go to cabinet 10"}
    assert named_actions("So I will Go to the Cabinet 1!", acts) == {"go to cabinet 1"}
    assert named_actions("I will look at mug 1", acts) == {"look at mug 1"}
    assert named_actions("Rather than go to cabinet 10, I go to cabinet 1", acts) == {"go to cabinet 1",
                                                                                      "go to cabinet 10"}
    # JSON tool calls: the raw call, or the function name with its argument values
    cd = '{"name": "cd", "arguments": {"folder": "photos"}}'
    ls = '{"name": "ls", "arguments": {}}'
    assert named_actions(f"So I will call `{cd}`.", [cd, ls]) == {cd}
    assert named_actions("So I will cd into photos.", [cd, ls]) == {cd}
    assert named_actions("So I will run ls first.", [cd, ls]) == {ls}
    case = ReflectionCase(State("make a file in photos", (), "You are in /home/user.", None),
                          Outcome(cd, "Now in /home/user/photos.", 0.0, False, True),
                          [Outcome(ls, "/home/user: photos/", 0.0, False, True)], "tools")
    base = "The file has to go into photos, and listing the home folder does not create anything. "
    assert check_reflection(base + "So I will cd into photos.", case, ReflectConfig()) == ("kept", "")
    assert check_reflection(base + "So I will run ls.", case, ReflectConfig()) == ("dropped", "contradicts_expert")
    # a period inside the action does not end the conclusion early
    write = '{"name": "write_file", "arguments": {"file_name": "a.txt", "content": "Hi. Bye."}}'
    case = dataclasses.replace(case, expert=Outcome(write, "Wrote 8 characters.", 0.5, False, True))
    assert check_reflection(base + f"So I will call `{write}`.", case, ReflectConfig()) == ("kept", "")


def test_conclude_appends_the_expert_action_only_where_no_action_is_named():
    from ee_jax.experience.reflect.filters import conclude

    case = ReflectionCase(State("cool an apple", (), "You are in the kitchen.", None),
                          Outcome("go to fridge 1", "The fridge 1 is closed.", 0.0, False, True),
                          [Outcome("go to cabinet 1", "The cabinet 1 is empty.", 0.0, False, True)], "household")
    vague = "The apple has to get cold, and cabinets hold nothing cold. The fridge is where cold things are"
    done = conclude(vague, case)
    assert done == vague + "\nSo I will take `go to fridge 1`."
    assert check_reflection(vague, case, ReflectConfig()) == ("dropped", "no_conclusion")
    assert check_reflection(done, case, ReflectConfig()) == ("kept", "")
    wrong = "Cabinets are close by. So I will go to cabinet 1."
    assert conclude(wrong, case) == wrong  # a conclusion for another action is left to be dropped
    assert check_reflection(conclude(wrong, case), case, ReflectConfig()) == ("dropped", "contradicts_expert")
    right = "The fridge cools things, so I will go to fridge 1."
    assert conclude(right, case) == right and conclude("  ", case) == "  "


# ------------------------------------------------------------------------------------------- self generator
@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from ee_jax.agent.policy import load_policy
    from ee_jax.config import load_config
    from ee_jax.data import synthetic_corpus
    from ee_jax.tokenizer import train_sentencepiece
    from tests.conftest import TINY

    run = tmp_path_factory.mktemp("run")
    prompts = [reflection_messages(c, PromptConfig())[1]["content"] for c in real_cases("household", 1, (1,))[:20]]
    train_sentencepiece(synthetic_corpus(400, seed=0) + prompts, run / "tokenizer" / "spm", 1000, seed=0)
    cfg = load_config(None, TINY + [f"run_dir={run}", "model.max_seq_len=1024", "prompt.history_window=1",
                                    "prompt.max_observation_chars=160", "experience.reflect.generator=self",
                                    "experience.reflect.batch_size=2", "experience.reflect.max_new_tokens=12",
                                    "experience.reflect.temperature=1.0"])
    return cfg, load_policy(cfg=cfg, init_if_missing=True)


def test_self_generator_deterministic_per_case(tiny_policy):
    cfg, policy = tiny_policy
    gen = make_generator(cfg, lambda: policy)
    assert isinstance(gen, SelfGenerator) and gen.name == "self"
    assert gen.settings()["policy"].startswith("init:") and "prompt_version" in gen.settings()
    cases = real_cases("household", 1, (1,))[:3]
    texts = gen.generate(cases, seed=5)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert gen.generate(cases, seed=5) == texts  # same seed, same texts
    assert gen.generate(cases[2:], seed=5) == texts[2:]  # a case's text does not depend on its batch
    assert gen.generate(cases, seed=6) != texts
    assert gen.errors == 0
    # a case whose prompt cannot fit the context gives "" and is counted; the rest are unaffected
    huge = dataclasses.replace(cases[0], state=dataclasses.replace(cases[0].state, goal="fetch " * 3000))
    mixed = gen.generate([cases[1], huge, cases[2]], seed=5)
    assert mixed == [texts[1], "", texts[2]]
    assert gen.errors == 1 and "does not fit" in gen.error_messages[0]


def test_self_generator_tightens_long_prompts(tiny_policy):
    cfg, policy = tiny_policy
    case = real_cases("household", 1, (1,))[3]
    long_obs = dataclasses.replace(case, state=dataclasses.replace(case.state, observation="x " * 4000))
    gen = SelfGenerator(policy, cfg.experience.reflect, dataclasses.replace(cfg.prompt, max_observation_chars=8000))
    ids = gen.prompt_ids(long_obs)
    assert ids is not None and len(ids) <= 1024 - cfg.experience.reflect.max_new_tokens


# ------------------------------------------------------------------------------------------- http generator
class _Stub(BaseHTTPRequestHandler):
    """OpenAI-format chat completions: answers with the taken action, fails a user turn containing FAILME."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"body": body, "auth": self.headers.get("Authorization")})
        user = body["messages"][-1]["content"]
        if "FAILME" in user:
            self._send(400, {"error": {"message": "bad request for this case"}})
            return
        action = re.search(r"The action that was taken: `(.*?)`, which leads to", user).group(1)
        reply = (f"<think>scratch</think>\nLooking at the outcomes, the other moves got me nowhere near the goal "
                 f"(seed {body['seed']}). So I will {action}.")
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                      "finish_reason": "stop"}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    _Stub.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_generator_against_stub(stub_url, monkeypatch, tiny_config):
    monkeypatch.setenv("EE_TEST_KEY", "sekrit-123")
    cfg = tiny_config("experience.reflect.generator=http", f"experience.reflect.url={stub_url}",
                      "experience.reflect.model=stub-model", "experience.reflect.api_key_env=EE_TEST_KEY",
                      "experience.reflect.max_retries=0", "experience.reflect.concurrency=2",
                      "experience.reflect.temperature=0.5", "experience.reflect.max_new_tokens=77")
    gen = make_generator(cfg)
    assert isinstance(gen, HttpGenerator) and gen.name == "teacher:stub-model"
    settings = json.dumps(gen.settings())
    assert "sekrit" not in settings and "EE_TEST_KEY" in settings and "stub-model" in settings
    cases = real_cases("household", 1, (1,))[:4]
    failing = dataclasses.replace(cases[1], state=dataclasses.replace(cases[1].state, goal="FAILME please"))
    batch = [cases[0], failing, cases[2], cases[3]]
    texts = gen.generate(batch, seed=11)
    assert texts[1] == "" and gen.errors == 1 and "bad request for this case" in gen.error_messages[0]
    assert "sekrit" not in " ".join(gen.error_messages)
    for case, text in zip(batch, texts):
        if text:
            assert not text.startswith("<think>") and f"(seed {case_seed(11, case)})" in text
            assert check_reflection(text, case, cfg.experience.reflect) == ("kept", "")
    reqs = _Stub.requests
    assert len(reqs) == 4 and all(r["auth"] == "Bearer sekrit-123" for r in reqs)
    assert sorted(r["body"]["seed"] for r in reqs) == sorted(case_seed(11, c) for c in batch)
    assert {(r["body"]["temperature"], r["body"]["max_tokens"], r["body"]["model"]) for r in reqs} == {
        (0.5, 77, "stub-model")}
    assert [m["role"] for m in reqs[0]["body"]["messages"]] == ["system", "user"]
    assert gen.generate(batch, seed=11) == texts  # the same seeds again
    assert HttpGenerator(cfg.experience.reflect, cfg.prompt, label="self").name == "self"


def test_generator_configuration_errors(tiny_config):
    cfg = tiny_config()
    bad_http = dataclasses.replace(cfg.experience.reflect, generator="http", url="", model="m")
    with pytest.raises(ValueError, match="experience.reflect.url"):
        HttpGenerator(bad_http, cfg.prompt)
    missing_key = dataclasses.replace(bad_http, url="http://127.0.0.1:9/v1", api_key_env="EE_TEST_UNSET_KEY_VAR")
    with pytest.raises(ValueError, match="EE_TEST_UNSET_KEY_VAR"):
        HttpGenerator(missing_key, cfg.prompt)
    self_cfg = dataclasses.replace(cfg, experience=dataclasses.replace(
        cfg.experience, reflect=dataclasses.replace(cfg.experience.reflect, generator="self")))
    with pytest.raises(ValueError, match="generator=self"):
        make_generator(self_cfg)
    bogus = dataclasses.replace(cfg, experience=dataclasses.replace(
        cfg.experience, reflect=dataclasses.replace(cfg.experience.reflect, generator="bogus")))
    with pytest.raises(ValueError, match="bogus"):
        make_generator(bogus)
    assert isinstance(make_generator(cfg), GroundedGenerator)  # the default
