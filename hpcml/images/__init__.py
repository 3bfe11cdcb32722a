"""SIF images: ensure each image of a plan is in a catalog (hit, or build and publish),
the content-addressed catalog itself, and the NFS-safe lock builders share."""
