#!/bin/sh
# Prints the greeting and the message of the day.
echo "${GREETING:-hello}"
cat /etc/motd
