"""``python -m volseg`` runs the command line."""

from volseg.cli import main

if __name__ == "__main__":
    main()
