// tap coverage map: every test file counts toward coverage of the whole product (proxy, config,
// metrics), not only a same-named file.
export default () => ['dist/proxy/**/*.js', 'dist/config/**/*.js', 'dist/metrics/**/*.js'];
