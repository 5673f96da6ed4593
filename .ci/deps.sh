# Sourced by ./test.sh and .ci/run: the tests' dependencies and how to get them.
# Debian packages are listed in .ci/packages.txt; the one pip package is here.

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# offline Kubernetes schema validation of deploy/ (schemas bundled in the wheel)
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"

# The Debian packages in .ci/packages.txt, one per line.
ci_packages() {
  awk '{ sub(/#.*/, ""); for (i = 1; i <= NF; i++) print $i }' "$CI_DIR/packages.txt"
}

# The packages of the list that are not installed, one per line.
ci_missing_packages() {
  local p
  for p in $(ci_packages); do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' ok installed$' || echo "$p"
  done
}

# pip install kubernetes-validate (PEP 668 systems need --break-system-packages).
ci_pip_install_kubernetes_validate() {
  python3 -m pip install -q "$KUBERNETES_VALIDATE" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "$KUBERNETES_VALIDATE"
}

# Real Zenoh for integration/zenoh.rs (sessions in Python, default config).
ZENOH_PY="eclipse-zenoh==1.10.2"

# Whether python3 can import zenoh.
ci_have_zenoh() {
  python3 -c 'import zenoh' 2>/dev/null
}

# pip install eclipse-zenoh (PEP 668 systems need --break-system-packages).
ci_pip_install_zenoh() {
  python3 -m pip install -q "$ZENOH_PY" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "$ZENOH_PY"
}
