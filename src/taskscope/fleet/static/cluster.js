// A long calling function scrolls: bring the line that called compute into view.
document.querySelectorAll("pre.code .calling").forEach(line => {
  line.parentElement.scrollTop = line.offsetTop - line.parentElement.offsetTop - 40;
});
