// Routes and the signed-in layout. One page per file under pages/; to add a page, add its route
// here and, if it belongs in the top bar, a NavLink.

import { NavLink, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { useAuth } from "./auth";
import { ComparePage } from "./pages/Compare";
import { FilesPage } from "./pages/Files";
import { JobDetailPage } from "./pages/JobDetail";
import { JobsPage } from "./pages/Jobs";
import { NewJobPage } from "./pages/NewJob";
import { PlaygroundPage } from "./pages/Playground";
import { SignInPage } from "./pages/SignIn";
import { SweepDetailPage } from "./pages/SweepDetail";
import { SweepsPage } from "./pages/Sweeps";
import { UsagePage } from "./pages/Usage";
import { WebhooksPage } from "./pages/Webhooks";

export function App() {
  const { client, signOut } = useAuth();
  const location = useLocation();
  if (!client) {
    return <SignInPage next={location.pathname === "/signin" ? "/jobs" : location.pathname + location.search} />;
  }
  return (
    <div className="layout">
      <header className="topbar">
        <span className="brand">ReplayFT</span>
        <nav aria-label="Main">
          <NavLink to="/jobs" end>
            Jobs
          </NavLink>
          <NavLink to="/jobs/new">New job</NavLink>
          <NavLink to="/files">Files</NavLink>
          <NavLink to="/compare">Compare</NavLink>
          <NavLink to="/sweeps">Sweeps</NavLink>
          <NavLink to="/playground">Playground</NavLink>
          <NavLink to="/usage">Usage</NavLink>
          <NavLink to="/settings/webhooks">Webhooks</NavLink>
        </nav>
        <button type="button" className="link-button" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <main>
        <Routes>
          <Route path="/" element={<Navigate to="/jobs" replace />} />
          <Route path="/signin" element={<Navigate to="/jobs" replace />} />
          <Route path="/jobs" element={<JobsPage />} />
          <Route path="/jobs/new" element={<NewJobPage />} />
          <Route path="/jobs/:jobId" element={<JobDetailPage />} />
          <Route path="/files" element={<FilesPage />} />
          <Route path="/compare" element={<ComparePage />} />
          <Route path="/sweeps" element={<SweepsPage />} />
          <Route path="/sweeps/new" element={<NewJobPage sweep />} />
          <Route path="/sweeps/:sweepId" element={<SweepDetailPage />} />
          <Route path="/playground" element={<PlaygroundPage />} />
          <Route path="/usage" element={<UsagePage />} />
          <Route path="/settings/webhooks" element={<WebhooksPage />} />
          <Route path="*" element={<p className="state">No page here. <NavLink to="/jobs">Go to jobs</NavLink></p>} />
        </Routes>
      </main>
    </div>
  );
}
