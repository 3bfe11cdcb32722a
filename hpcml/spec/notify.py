"""The `notify:` section: who hears of a run, and when.

    notify:
      on: [finish, failure]
      webhook: SLACK_WEBHOOK_URL     # the NAME of a secret: its value comes from the environment
      mail: ana@example.org          # SLURM's own mail

A webhook URL is a credential, so the spec names the environment variable that holds it;
`hpcml run` reads it then and keeps it only in the run's 0600 secrets file.
"""

from __future__ import annotations

from hpcml.model import Notify
from hpcml.spec.rules import ENV_RE, ENV_RULE, MAIL_RE, NOTIFY_EVENTS, NOTIFY_KEYS
from hpcml.spec.shapes import Shapes
from hpcml.spec.yamlpos import YNode


class NotifyChecks(Shapes):
    """Checks of the `notify:` section (mixed into the checker)."""

    def notify(self, node: YNode | None) -> Notify | None:
        m = self.mapping(node, "notify", NOTIFY_KEYS, required=("on",))
        if m is None or node is None:
            return None
        events = self.string_list(m["on"], "notify.on", lambda n: self.choice(n, "notify event", NOTIFY_EVENTS)) if "on" in m else ()
        webhook = None
        if "webhook" in m:
            value = self.string(m["webhook"], "notify.webhook")
            if value is not None and "://" in value:
                self.err(m["webhook"], "notify.webhook names the secret holding the URL (e.g. SLACK_WEBHOOK_URL), "
                         "not the URL itself: a URL in the workflow file would be kept in every run's copy of it")
            elif value is not None:
                webhook = self.matching(m["webhook"], "notify.webhook secret name", ENV_RE, f"use an environment variable name {ENV_RULE}")
        mail = self.matching(m["mail"], "notify.mail address", MAIL_RE, "use one plain address (user@host)") if "mail" in m else None
        if "webhook" not in m and "mail" not in m:
            self.err(node, "notify needs a webhook (a secret's name) or a mail address to send to")
        if not events:
            return None
        return Notify(events, webhook, mail)
