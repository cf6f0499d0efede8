# The workspace's closure, built by the local nix without a binary cache or a download: the
# builder of every derivation is the host's static busybox (Debian package busybox-static), and
# the CA bundle is the host's. Each attribute is one store path of the image.
let
  # The host's files, copied into the store as they are.
  # Only busybox of /usr/bin (where merged-/usr Debian has /bin/busybox): it must be called
  # `busybox` to run as the multi-call binary.
  host-busybox = builtins.path {
    path = /usr/bin;
    name = "host-busybox";
    filter = path: type: path == "/usr/bin/busybox";
  };
  busybox-exe = "${host-busybox}/busybox";
  host-ca = builtins.path { path = /etc/ssl/certs/ca-certificates.crt; name = "host-ca-bundle.crt"; };

  # `busybox sh -c SCRIPT`.
  run = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = busybox-exe;
    args = [ "sh" "-c" script ];
  };
in {
  # A shell, the core utilities and a downloader (wget): busybox with a link per applet.
  busybox = run "busybox-static" ''
    set -e
    ${busybox-exe} mkdir -p $out/bin
    ${busybox-exe} cp ${busybox-exe} $out/bin/busybox
    for applet in $(${busybox-exe} --list); do
      [ "$applet" = busybox ] || ${busybox-exe} ln -s busybox $out/bin/$applet
    done
  '';

  # The CA bundle, where nixpkgs' cacert keeps it.
  cacert = run "cacert-host" ''
    set -e
    ${busybox-exe} mkdir -p $out/etc/ssl/certs
    ${busybox-exe} cp ${host-ca} $out/etc/ssl/certs/ca-bundle.crt
  '';
}
