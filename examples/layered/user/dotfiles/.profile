# Per-user login settings.
. /etc/profile.d/strata.sh
PS1='dev$ '
