# Shared by scripts/compat-test.sh and scripts/pelican-interop.sh (sourced, not run):
# free ports, a throwaway TLS CA with a certificate for 127.0.0.1, and a Python venv.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# make_ca DIR: DIR/ca.pem (a throwaway CA) and DIR/director.pem + director.key (a server
# certificate for IP 127.0.0.1 signed by it); private keys mode 0600.
make_ca() {
  (
    cd "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -keyout ca.key -out ca.pem -subj /CN=skein-test-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout director.key -out director.csr -subj /CN=127.0.0.1 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in director.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -out director.pem -extfile ext.cnf 2>/dev/null
    chmod 600 director.key ca.key
  )
}

# python_venv VENV CHECK PACKAGE...: unless VENV's python runs the CHECK snippet
# successfully, (re)creates VENV (installing python3-venv with apt-get if needed) and
# pip-installs the packages.
python_venv() {
  local venv=$1 check=$2
  shift 2
  if "$venv/bin/python" -c "$check" 2>/dev/null; then
    return 0
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    echo "python3 -m venv failed; installing python3-venv" >&2
    local sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}
