//! One module per subcommand of the `scalefold` binary.
