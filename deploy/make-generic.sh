#!/usr/bin/env bash
# Prints deploy/generic/ros2-cni.yaml: the MicroK8s manifest with the generic
# Kubernetes paths (/opt/cni/bin, /etc/cni/net.d, /var/lib/ros2-cni).
#   deploy/make-generic.sh > deploy/generic/ros2-cni.yaml
# The integration tests check that the committed file matches this output.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# the backquotes below are text in YAML comments, not shell
# shellcheck disable=SC2016
sed \
  -e 's|^# ros2-cni for MicroK8s (Calico, the default CNI)\.|# ros2-cni for a Kubernetes cluster whose runtime reads /etc/cni/net.d.|' \
  -e 's|^# Variant: MicroK8s paths (/var/snap/microk8s/\.\.\.)\. deploy/generic/ros2-cni.yaml is|# Variant: generic paths, generated from deploy/microk8s/ros2-cni.yaml (which is|' \
  -e 's|^# the same manifest for /etc/cni/net.d + /opt/cni/bin (regenerate it with|# the same manifest for MicroK8s) by deploy/make-generic.sh; edit that one and|' \
  -e 's|^# deploy/make-generic.sh after editing this file)\.|# regenerate this one.|' \
  -e 's|`microk8s kubectl get nodes`|`kubectl get nodes`|' \
  -e 's|`microk8s ctr image import ros2-cni-image.tar`|`ctr -n k8s.io image import ros2-cni-image.tar`|' \
  -e 's|/var/snap/microk8s/current/opt/cni/bin|/opt/cni/bin|g' \
  -e 's|/var/snap/microk8s/current/args/cni-network|/etc/cni/net.d|g' \
  -e 's|/var/snap/microk8s/common/var/lib/ros2-cni|/var/lib/ros2-cni|g' \
  -e 's|/var/snap/microk8s/common/var/log/ros2-cni.log|/var/log/ros2-cni.log|g' \
  -e 's|when calico-node rewrites the conflist|when the primary CNI rewrites its conflist|' \
  -e 's|conflist containerd loads|conflist the runtime loads|' \
  "$here/microk8s/ros2-cni.yaml"
