#!/usr/bin/env python3
"""An SMTP server for nodeagent's alerting tests (aiosmtpd, from Debian's python3-aiosmtpd).

It demands AUTH LOGIN with the given user and password, as a real smarthost would, and writes
each message it accepts to OUTDIR/NNNN.eml. Its LOGIN challenges are the usual "Username:" and
"Password:" (aiosmtpd's own, "User Name"/"Password", are not what Alertmanager's client expects).

usage: smtp_sink.py PORT OUTDIR USER PASSWORD
"""
import os
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

SMTP.AuthLoginUsernameChallenge = "Username:"
SMTP.AuthLoginPasswordChallenge = "Password:"


class Handler:
    def __init__(self, outdir):
        self.outdir = outdir

    async def handle_DATA(self, server, session, envelope):
        number = len(os.listdir(self.outdir))
        with open(os.path.join(self.outdir, f"{number:04d}.eml"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        return "250 OK"


def main():
    port, outdir, user, password = sys.argv[1:5]

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok)

    controller = Controller(Handler(outdir), hostname="127.0.0.1", port=int(port), authenticator=authenticate,
                            auth_required=True, auth_require_tls=False, auth_exclude_mechanism=["PLAIN"])
    controller.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
